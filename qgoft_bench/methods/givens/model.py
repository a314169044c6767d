"""The GOFT / GOFT* / qGOFT methods: find target linears, wrap them, freeze the rest."""

from collections.abc import Callable

import torch
from omegaconf import DictConfig
from torch import nn

from qgoft_bench.errors import ConfigError
from qgoft_bench.methods import register_method
from qgoft_bench.methods.base import Decay, Method
from qgoft_bench.methods.givens.config import GivensConfig
from qgoft_bench.methods.givens.layer import (
    LINEAR_KINDS,
    GivensLayer,
    GOFTLayer,
    GOFTScaledLayer,
    QGOFTLayer,
)
from qgoft_bench.methods.params import in_head
from qgoft_bench.methods.targets import find_targets, set_submodule, to_linears
from qgoft_bench.models import ModelSpec

# method name -> its layer around a target linear (paper Sec. 3-4: GOFT's angles, GOFT*'s added scales, qGOFT's
# free 2 x 2 blocks under a soft orthogonality penalty)
LAYERS: dict[str, Callable[[nn.Module, GivensConfig], GivensLayer]] = {
    "goft": lambda base, config: GOFTLayer(base, config.parametrization),
    "goft_scaled": lambda base, config: GOFTScaledLayer(base, config.parametrization),
    "qgoft": lambda base, config: QGOFTLayer(base),
}


@register_method(*LAYERS)
class GivensMethod(Method):
    """Wraps every targeted linear with the Givens layer ``LAYERS[cfg.name]``."""

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        self.config = GivensConfig.from_cfg(cfg)
        self.layers: list[GivensLayer] = []

    def apply(self, model: nn.Module, spec: ModelSpec) -> nn.Module:
        model.requires_grad_(False)
        found = find_targets(model, self.config.target_modules, LINEAR_KINDS)
        found = [(name, layer) for name, layer in found if not in_head(name, spec.head_modules)]
        if not found:
            raise ConfigError(f"method.target_modules={self.config.target_modules} only match head modules")
        for name, layer in found:
            wrapped = LAYERS[self.config.name](layer, self.config)
            set_submodule(model, name, wrapped)
            self.layers.append(wrapped)
        return model

    def decay(self, name: str, param: nn.Parameter) -> Decay:
        """Every Givens parameter (angles, scales, blocks) decays toward ``method.decay_to``: by default its value at
        the start, the identity rotation, as OFT's skew-symmetric parameters decay toward theirs."""
        if any(f".{prefix}" in f".{name}" for prefix in ("goft_", "qgoft_")):
            return self.config.decay_to
        return super().decay(name, param)

    def regularizer(self) -> torch.Tensor | None:
        """qGOFT: lambda * sum over layers and blocks of (M00 M01 + M10 M11)^2, a device tensor (no host sync)."""
        penalized = [layer for layer in self.layers if isinstance(layer, QGOFTLayer)]
        if not penalized:
            return None
        return self.config.reg_lambda * torch.stack([layer.penalty() for layer in penalized]).sum()

    def merge(self, model: nn.Module) -> nn.Module:
        """Replace every Givens layer by a plain nn.Linear with W' = W R^T (computed in float32)."""
        to_linears(model, GivensLayer)
        self.layers = []
        return model
