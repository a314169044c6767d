"""Methods that add nothing: full fine-tuning and linear probing (the head alone)."""

from torch import nn

from qgoft_bench.methods import register_method
from qgoft_bench.methods.base import Method, ModelSpec


@register_method("full")
class Full(Method):
    """Every parameter trains; adapter_params counts the whole backbone (the papers' 184M for DeBERTaV3-base)."""

    def apply(self, model: nn.Module, spec: ModelSpec) -> nn.Module:
        model.requires_grad_(True)
        return model


register_method("linear")(Method)  # linear probing: the base class freezes everything; the harness trains the head
