"""Mixout (Lee et al., ICLR 2020), as published: while training, each entry of a weight is swapped for its
pre-trained value with probability p, and the result rescaled so that its expectation is the current weight:

    mixout(W) = (M * W + (1 - M) * W0 - p W0) / (1 - p),  M_ij ~ Bernoulli(1 - p)

In evaluation the weight is W. Every parameter trains (it is a regulariser, not a sparse method); it applies to the
weight matrices of the encoder's linear layers. Fu et al.'s released code does something else under this name:
plain full fine-tuning, and at each evaluation a copy of the model with each encoder entry reset to its pre-trained
value with probability p, without rescaling.
"""

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from qgoft_bench.errors import ConfigError
from qgoft_bench.methods import register_method
from qgoft_bench.methods.base import Method
from qgoft_bench.methods.knobs import MethodConfig
from qgoft_bench.methods.params import in_head
from qgoft_bench.models import ModelSpec


@dataclass
class MixoutConfig(MethodConfig):
    name: str = "mixout"
    label: str = "mixout"
    p: float = 0.9  # Lee et al.'s choice for BERT on GLUE's small tasks

    def __post_init__(self) -> None:
        if not 0 <= self.p < 1:
            raise ConfigError(f"method.p={self.p} must be in [0, 1)")


class Mix(nn.Module):
    """W -> mixout(W) in training, W in evaluation; W0 is a frozen copy of the pre-trained weight."""

    def __init__(self, weight: torch.Tensor, p: float) -> None:
        super().__init__()
        self.p = p
        self.register_buffer("pretrained", weight.detach().clone())

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return weight
        keep = torch.rand_like(weight, dtype=torch.float32) >= self.p  # M ~ Bernoulli(1 - p)
        mixed = torch.where(keep, weight, self.pretrained.to(weight.dtype))
        return (mixed - self.p * self.pretrained.to(weight.dtype)) / (1 - self.p)


@register_method("mixout")
class Mixout(Method):
    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.config = MixoutConfig.from_cfg(cfg)
        self.mixes: list[Mix] = []

    def apply(self, model: nn.Module, spec: ModelSpec) -> nn.Module:
        model.requires_grad_(True)
        for name, module in list(model.named_modules()):
            if isinstance(module, nn.Linear) and not in_head(f"{name}.weight", spec.head_modules):
                mix = Mix(module.weight, self.config.p)
                parametrize.register_parametrization(module, "weight", mix)
                self.mixes.append(mix)
        return model

    def merge(self, model: nn.Module) -> nn.Module:
        for module in list(model.modules()):
            if parametrize.is_parametrized(module, "weight") and isinstance(module.parametrizations.weight[0], Mix):
                parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
        return model
