"""Placing bottleneck adapters on a model: Houlsby (after attention and FFN outputs) and Pfeiffer (FFN only).

An adapter is nonlinear, so it cannot be folded into the weight it follows: ``merge`` returns the model unchanged,
adapters still in place (inference then runs them, as the papers do).
"""

from torch import nn

from qgoft_bench.errors import ConfigError
from qgoft_bench.methods import register_method
from qgoft_bench.methods.base import Method
from qgoft_bench.methods.houlsby.config import SUBLAYER_OUTPUTS, AdapterConfig
from qgoft_bench.methods.houlsby.layer import BottleneckAdapterLayer
from qgoft_bench.methods.targets import find_targets, matches, set_submodule
from qgoft_bench.models import ModelSpec


def adapter_targets(model: nn.Module, config: AdapterConfig, family: str) -> list[tuple[str, nn.Linear]]:
    """The linear layers whose outputs get an adapter: ``config.target_modules``, or by family and placement."""
    if config.target_modules is not None:
        return find_targets(model, config.target_modules, (nn.Linear,))
    if family not in SUBLAYER_OUTPUTS:
        raise ConfigError(f"bottleneck adapters know no sublayer outputs for model family {family!r}; "
                          "set method.target_modules to the attention and FFN output projections")
    keys = SUBLAYER_OUTPUTS[family]
    found = []
    for name, module in find_targets(model, [k for p in config.placement for k in keys[p]], (nn.Linear,)):
        kind = "attention" if matches(name, keys["attention"]) else "ffn"
        if kind in config.placement:
            found.append((name, module))
    return found


@register_method("houlsby_adapter")
@register_method("pfeiffer_adapter")
class BottleneckAdapterMethod(Method):
    """Freeze the backbone; wrap each target layer in a ``BottleneckAdapterLayer`` whose adapter alone trains."""

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.config = AdapterConfig.from_cfg(cfg)

    def apply(self, model: nn.Module, spec: ModelSpec) -> nn.Module:
        model.requires_grad_(False)
        for name, base in adapter_targets(model, self.config, spec.family):
            layer = BottleneckAdapterLayer(base, self.config.bottleneck, self.config.activation, self.config.init_std)
            set_submodule(model, name, layer)
        return model

    def merge(self, model: nn.Module) -> nn.Module:
        """Adapters cannot merge (see the module docstring): the model is returned unchanged."""
        return model
