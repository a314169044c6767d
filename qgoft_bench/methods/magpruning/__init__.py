"""MagPruning (Fu et al., AAAI 2023): fine-tune everything for a burn-in, then train only the entries of largest
magnitude |theta| of each tensor.

As the released code: ``method.burn_in_steps`` updates of full fine-tuning (AdamW, ``method.burn_in_lr``; the head
trains too), then the top ceil(p * numel) entries of |theta| per tensor. Unlike the released code, the entries
outside the mask go back to their pre-trained values (there they kept their burn-in values, and Adam's momentum
moved them further), so the method stays within its budget: only the selected entries differ from the pre-trained
model, starting from their burn-in values.
"""

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from qgoft_bench.errors import ConfigError
from qgoft_bench.methods import register_method
from qgoft_bench.methods.base import LossFn
from qgoft_bench.methods.sparse.config import SparseConfig
from qgoft_bench.methods.sparse.layer import install, top_entries
from qgoft_bench.methods.sparse.model import BURN_IN_FLOAT32, SparseMethod, cycle, require_float32


@dataclass
class MagPruningConfig(SparseConfig):
    name: str = "magpruning"
    label: str = "magpruning"
    burn_in_steps: int = 500  # the released code's default
    burn_in_lr: float = 1.0e-4  # Fu et al.'s learning rate

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.burn_in_steps < 1:
            raise ConfigError(f"method.burn_in_steps={self.burn_in_steps} must be >= 1")
        if not self.burn_in_lr > 0:
            raise ConfigError(f"method.burn_in_lr={self.burn_in_lr} must be > 0")


@register_method("magpruning")
class MagPruning(SparseMethod):
    config_class = MagPruningConfig
    needs_float32 = BURN_IN_FLOAT32

    def prepare(self, model: nn.Module, batches: Iterable[dict], loss_fn: LossFn) -> None:
        require_float32(model, "magpruning")
        pretrained = {name: p.detach().clone() for name, p in self.candidates.items()}
        burn_in(model, self.candidates, batches, loss_fn, self.config.burn_in_steps, self.config.burn_in_lr)
        burned = {name: p.detach().clone() for name, p in self.candidates.items()}
        with torch.no_grad():
            for name, p in self.candidates.items():
                p.copy_(pretrained[name])
        selected = top_entries({n: w.abs() for n, w in burned.items()}, self.config.ratio,
                               per_tensor=self.config.topk == "tensor")
        self.layers = install(model, selected)
        with torch.no_grad():
            for name, layer in self.layers.items():
                layer.values.copy_(burned[name].flatten()[layer.idx])


def burn_in(model: nn.Module, params: dict[str, nn.Parameter], batches: Iterable[dict], loss_fn: LossFn, steps: int,
            lr: float) -> None:
    """``steps`` updates of AdamW (lr ``lr``, its default weight decay) on ``params`` and every parameter that
    already trains (the head); ``params`` are frozen again after."""
    for p in params.values():
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    try:
        for batch in cycle(batches, steps):
            loss_fn(batch).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    finally:
        for p in params.values():
            p.requires_grad_(False)
