"""LoRA on parts of a fused linear: y = x W^T + b, then output block k (one of the chosen parts) gains
(alpha / r) x A_k^T B_k^T with A_k (r x in) and B_k (d_k x r); B starts at zero. Merged: W[block k] += (alpha / r)
B_k A_k, exact. Rows are samples."""

import math

import torch
from torch import nn


class FusedLoRALayer(nn.Module):
    """``base_layer`` (frozen, out = n_parts equal blocks) with a LoRA pair on each block in ``blocks``."""

    def __init__(self, base_layer: nn.Linear, n_parts: int, blocks: list[int], r: int, alpha: float,
                 dropout: float) -> None:
        super().__init__()
        if base_layer.out_features % n_parts:
            raise ValueError(f"out_features {base_layer.out_features} is not {n_parts} equal parts")
        self.base_layer, self.blocks, self.scaling = base_layer, list(blocks), alpha / r
        self.part = base_layer.out_features // n_parts
        factory = {"device": base_layer.weight.device, "dtype": base_layer.weight.dtype}
        self.lora_A = nn.ParameterList(
            [nn.Parameter(torch.empty(r, base_layer.in_features, **factory)) for _ in blocks])
        self.lora_B = nn.ParameterList([nn.Parameter(torch.zeros(self.part, r, **factory)) for _ in blocks])
        for a in self.lora_A:
            if not a.is_meta:
                nn.init.kaiming_uniform_(a, a=math.sqrt(5))  # PEFT's LoRA A
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)
        xd = self.dropout(x)
        updates = [None] * (self.base_layer.out_features // self.part)
        for k, a, b in zip(self.blocks, self.lora_A, self.lora_B, strict=True):
            updates[k] = (xd @ a.t()) @ b.t() * self.scaling
        pieces = [u if u is not None else y.new_zeros(*y.shape[:-1], self.part) for u in updates]
        return y + torch.cat(pieces, dim=-1)

    @torch.no_grad()
    def to_linear(self) -> nn.Linear:
        """The base linear with the LoRA updates folded into its weight (float32 products)."""
        weight = self.base_layer.weight
        for k, a, b in zip(self.blocks, self.lora_A, self.lora_B, strict=True):
            rows = slice(k * self.part, (k + 1) * self.part)
            weight[rows] = (weight[rows].float() + self.scaling * (b.float() @ a.float())).to(weight.dtype)
        return self.base_layer
