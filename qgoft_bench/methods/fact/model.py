"""Placing FacT on a model: find the target linears, cut them into d x d slices, share one set of factors."""

import math

from omegaconf import DictConfig
from torch import nn

from qgoft_bench.errors import ConfigError
from qgoft_bench.methods import register_method
from qgoft_bench.methods.base import Method
from qgoft_bench.methods.fact.config import FACT_TARGETS, FacTConfig
from qgoft_bench.methods.fact.layer import FacTFactors, FacTLayer
from qgoft_bench.methods.params import in_head
from qgoft_bench.methods.targets import find_targets, set_submodule, to_linears
from qgoft_bench.models import ModelSpec

FACTORS = "fact_factors"  # the model attribute that holds the shared factors


@register_method("fact_tt", "fact_tk")
class FacTMethod(Method):
    """Freeze the backbone; wrap every target linear in a ``FacTLayer`` over factors shared by all of them."""

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        self.config = FacTConfig.from_cfg(cfg)

    def targets(self, model: nn.Module, spec: ModelSpec) -> list[tuple[str, nn.Linear]]:
        """The (name, linear) pairs FacT adapts: ``method.target_modules``, or the family's default
        (``FACT_TARGETS``), head excluded. Raises ``ConfigError`` when the family has no default or only head
        modules match."""
        keys = self.config.target_modules
        if keys is None:
            if spec.family not in FACT_TARGETS:
                raise ConfigError(f"FacT knows no target layers for model family {spec.family!r}; set "
                                  "method.target_modules")
            keys = FACT_TARGETS[spec.family]
        found = [(n, m) for n, m in find_targets(model, keys, (nn.Linear,)) if not in_head(n, spec.head_modules)]
        if not found:
            raise ConfigError(f"method.target_modules={keys} only match head modules")
        return found

    def apply(self, model: nn.Module, spec: ModelSpec) -> nn.Module:
        model.requires_grad_(False)
        found = self.targets(model, spec)
        width = self.config.width or math.gcd(*(n for _, m in found for n in (m.in_features, m.out_features)))
        for name, layer in found:
            if layer.in_features % width or layer.out_features % width:
                raise ConfigError(f"method.width={width} does not divide {name} ({layer.out_features} x "
                                  f"{layer.in_features})")
        slices = sum(m.in_features // width * (m.out_features // width) for _, m in found)
        weight = found[0][1].weight
        factors = FacTFactors(self.config.form, width, self.config.r, slices,
                              {"device": weight.device, "dtype": weight.dtype})
        model.add_module(FACTORS, factors)
        first = 0
        for name, layer in found:
            wrapped = FacTLayer(layer, factors, first, self.config.scale, self.config.dropout)
            set_submodule(model, name, wrapped)
            first += wrapped.slices
        return model

    def counts(self, model: nn.Module, spec: ModelSpec) -> dict[str, int]:
        """Plus ``fact_slices``: N, the d x d slices stacked in FacT's tensor (144 on a 12-block base model)."""
        factors = getattr(model, FACTORS)
        return {**super().counts(model, spec), "fact_slices": factors.slices}

    def merge(self, model: nn.Module) -> nn.Module:
        """Fold every slice's update into its frozen weight (W' = W + dW, exact) and drop the shared factors."""
        to_linears(model, FacTLayer)
        if hasattr(model, FACTORS):
            delattr(model, FACTORS)
        return model
