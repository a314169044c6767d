"""Exact sparse fine-tuning: the selected entries of a frozen tensor train as a vector of their own.

``SparseValues`` is a ``torch.nn.utils.parametrize`` parametrization of one parameter tensor W (any shape): it
holds fixed flat indices ``idx`` (k,) and a trainable ``values`` vector (k,), and the module sees
W' = W with W'.flat[idx] = values. The original W stays frozen, so every entry outside ``idx`` keeps its value bit
for bit whatever the optimizer does (weight decay included), and AdamW keeps state for the k values only.
``merge`` folds W' into a plain parameter again.
"""

import math

import torch
from torch import nn
from torch.nn.utils import parametrize


class SparseValues(nn.Module):
    """W -> W with ``values`` at the flat positions ``idx``; ``start`` keeps the values it began from."""

    def __init__(self, weight: torch.Tensor, idx: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("idx", idx.to(weight.device, torch.long))
        self.register_buffer("start", weight.detach().flatten()[self.idx].clone())
        self.values = nn.Parameter(self.start.clone())

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.flatten().index_put((self.idx,), self.values.to(weight.dtype)).view_as(weight)

    def changed(self) -> int:
        """How many of the selected entries differ from where they started."""
        return int((self.values.detach() != self.start).sum())


def budget(numel: int, ratio: float) -> int:
    """Entries a tensor of ``numel`` may change at ``ratio``: ceil(ratio * numel), at least 1 (Fu et al.: per tensor)."""
    return max(1, math.ceil(ratio * numel))


def top_entries(scores: dict[str, torch.Tensor], ratio: float, per_tensor: bool = True) -> dict[str, torch.Tensor]:
    """The flat indices to train per tensor: the ``budget(numel, ratio)`` highest ``scores`` of each tensor, or, with
    ``per_tensor`` False, the highest of all tensors together (the same total). Ties go to the lower index."""
    if per_tensor:
        return {name: torch.topk(s.flatten().float(), budget(s.numel(), ratio), sorted=False).indices
                for name, s in scores.items()}
    total = sum(budget(s.numel(), ratio) for s in scores.values())
    flat = torch.cat([s.flatten().float() for s in scores.values()])
    chosen = torch.topk(flat, total, sorted=False).indices
    out, offset = {}, 0
    for name, s in scores.items():
        inside = chosen[(chosen >= offset) & (chosen < offset + s.numel())] - offset
        if len(inside):
            out[name] = inside
        offset += s.numel()
    return out


def install(model: nn.Module, selected: dict[str, torch.Tensor]) -> dict[str, SparseValues]:
    """Parametrize every named parameter of ``model`` in ``selected`` with its ``SparseValues``; the originals stay
    frozen. Returns the parametrizations by parameter name (their ``values`` are what trains)."""
    layers = {}
    for name, idx in selected.items():
        module_name, _, attribute = name.rpartition(".")
        module = model.get_submodule(module_name)
        weight = getattr(module, attribute)
        weight.requires_grad_(False)
        layer = SparseValues(weight, idx)
        parametrize.register_parametrization(module, attribute, layer)
        layers[name] = layer
    return layers


def merge(model: nn.Module) -> nn.Module:
    """Replace every ``SparseValues`` parametrization by the plain tensor it computes."""
    for module in list(model.modules()):
        if parametrize.is_parametrized(module):
            for attribute in list(module.parametrizations):
                if any(isinstance(p, SparseValues) for p in module.parametrizations[attribute]):
                    parametrize.remove_parametrizations(module, attribute, leave_parametrized=True)
    return model
