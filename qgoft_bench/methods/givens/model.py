"""The GOFT / GOFT* / qGOFT methods: find target linears, wrap them, freeze the rest."""

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


@register_method("goft", "goft_scaled", "qgoft")
class GivensMethod(Method):
    """Wraps every targeted linear with a Givens layer of the kind ``cfg.name`` names."""

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        self.config = GivensConfig.from_cfg(cfg)
        self.layers: list[GivensLayer] = []

    def _wrap(self, layer: nn.Module) -> GivensLayer:
        name = self.config.name
        if name == "goft":
            return GOFTLayer(layer, self.config.parametrization)
        if name == "goft_scaled":
            return GOFTScaledLayer(layer, self.config.parametrization)
        return QGOFTLayer(layer)

    def apply(self, model: nn.Module, spec: ModelSpec) -> nn.Module:
        model.requires_grad_(False)
        found = find_targets(model, self.config.target_modules, LINEAR_KINDS)
        found = [(name, layer) for name, layer in found if not in_head(name, spec.head_modules)]
        if not found:
            raise ConfigError(f"method.target_modules={self.config.target_modules} only match head modules")
        for name, layer in found:
            wrapped = self._wrap(layer)
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
        if self.config.name != "qgoft" or not self.layers:
            return None
        return self.config.reg_lambda * torch.stack([layer.penalty() for layer in self.layers]).sum()

    def merge(self, model: nn.Module) -> nn.Module:
        """Replace every Givens layer by a plain nn.Linear with W' = W R^T (computed in float32)."""
        to_linears(model, GivensLayer)
        self.layers = []
        return model
