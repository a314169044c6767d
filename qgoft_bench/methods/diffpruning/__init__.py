"""DiffPruning (Guo et al., ACL 2021; a baseline of Fu et al., AAAI 2023): learn a diff vector behind hard-concrete
L0 gates for a burn-in, then fix the top-p mask and train only the masked diffs.

During the burn-in every encoder tensor W computes as W + z * w: w the diff (zero at the start), z in [0, 1] a
hard-concrete gate per entry (Louizos et al., ICLR 2018: stretched to (-0.1, 1.1), temperature 2/3, then clipped)
with logit ``log_alpha``; the loss gains ``method.l0_lambda`` times the mean probability that a gate is open.
After ``method.burn_in_steps`` updates (AdamW, ``method.burn_in_lr``; the head trains too) the ceil(p * numel)
entries of largest ``log_alpha`` per tensor keep their diffs at the gates' deterministic value and train on; every
other entry goes back to its pre-trained value. The released code of Fu et al. ranks by |log_alpha| (so strongly
closed gates count as chosen) and diffs the head as well; here the head trains in full as for every method.
"""

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from qgoft_bench.errors import ConfigError
from qgoft_bench.methods import register_method
from qgoft_bench.methods.base import LossFn
from qgoft_bench.methods.sparse.config import SparseConfig
from qgoft_bench.methods.sparse.layer import install, top_entries
from qgoft_bench.methods.sparse.model import BURN_IN_FLOAT32, SparseMethod, cycle, require_float32

LOW, HIGH, TEMPERATURE = -0.1, 1.1, 2.0 / 3.0  # Louizos et al.'s stretch and temperature


@dataclass
class DiffPruningConfig(SparseConfig):
    name: str = "diffpruning"
    label: str = "diffpruning"
    burn_in_steps: int = 500
    burn_in_lr: float = 1.0e-4
    l0_lambda: float = 1.0  # weight of the mean open-gate probability (the released code's default)
    log_alpha_init: float = 1.0  # gates start open with probability ~0.8

    def __post_init__(self) -> None:
        super().__post_init__()
        for key, ok, rule in (("burn_in_steps", self.burn_in_steps >= 1, ">= 1"),
                              ("burn_in_lr", self.burn_in_lr > 0, "positive"), ("l0_lambda", self.l0_lambda >= 0, ">= 0")):
            if not ok:
                raise ConfigError(f"method.{key}={getattr(self, key)} must be {rule}")


class GatedDiff(nn.Module):
    """W -> W + z * diff, z a hard-concrete gate per entry (sampled in training, its mean value in eval)."""

    def __init__(self, weight: torch.Tensor, log_alpha: float) -> None:
        super().__init__()
        self.diff = nn.Parameter(torch.zeros_like(weight, dtype=torch.float32))
        self.log_alpha = nn.Parameter(torch.full_like(weight, log_alpha, dtype=torch.float32))

    def gate(self) -> torch.Tensor:
        """z in [0, 1], shaped as the weight: in training a hard-concrete sample (Louizos et al. 2018: stretched
        to (LOW, HIGH), then clipped), in evaluation its deterministic value sigmoid(log_alpha), stretched."""
        if self.training:
            u = torch.rand_like(self.log_alpha).clamp(1e-6, 1 - 1e-6)
            s = torch.sigmoid((u.log() - (-u).log1p() + self.log_alpha) / TEMPERATURE)
        else:
            s = torch.sigmoid(self.log_alpha)
        return (s * (HIGH - LOW) + LOW).clamp(0, 1)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + (self.gate() * self.diff).to(weight.dtype)

    def open_probability(self) -> torch.Tensor:
        """P(z > 0) per entry, the expected L0 norm's terms."""
        return torch.sigmoid(self.log_alpha - TEMPERATURE * math.log(-LOW / HIGH))


@register_method("diffpruning")
class DiffPruning(SparseMethod):
    config_class = DiffPruningConfig
    needs_float32 = BURN_IN_FLOAT32

    def prepare(self, model: nn.Module, batches: Iterable[dict], loss_fn: LossFn) -> None:
        require_float32(model, "diffpruning")  # W + z * diff in half precision would lose the small diffs
        gates = {}
        for name, p in self.candidates.items():
            module_name, _, attribute = name.rpartition(".")
            gates[name] = GatedDiff(p, self.config.log_alpha_init)
            parametrize.register_parametrization(model.get_submodule(module_name), attribute, gates[name])

        def penalised(batch: dict) -> torch.Tensor:
            l0 = torch.stack([g.open_probability().mean() for g in gates.values()]).mean()
            return loss_fn(batch) + self.config.l0_lambda * l0

        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=self.config.burn_in_lr)
        for batch in cycle(batches, self.config.burn_in_steps):
            penalised(batch).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        with torch.no_grad():
            diffs = {name: (g.eval().gate() * g.diff) for name, g in gates.items()}
            scores = {name: g.log_alpha.detach() for name, g in gates.items()}
        for name in gates:  # back to the pre-trained tensor, gates and diffs dropped
            module_name, _, attribute = name.rpartition(".")
            parametrize.remove_parametrizations(model.get_submodule(module_name), attribute, leave_parametrized=False)
        self.candidates = {n: model.get_parameter(n) for n in self.candidates}
        for p in self.candidates.values():
            p.requires_grad_(False)
        selected = top_entries(scores, self.config.ratio, per_tensor=self.config.topk == "tensor")
        self.layers = install(model, selected)
        with torch.no_grad():
            for name, layer in self.layers.items():
                layer.values.add_(diffs[name].flatten()[layer.idx].to(layer.values.dtype))
