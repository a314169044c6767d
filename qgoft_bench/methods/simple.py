"""Methods that add no layers: full fine-tuning, linear probing (the head alone) and BitFit (biases alone).

None of them has anything to merge: ``merge`` returns the model as it is (already plain weights).
"""

from torch import nn

from qgoft_bench.errors import ConfigError
from qgoft_bench.methods import register_method
from qgoft_bench.methods.base import Method
from qgoft_bench.methods.params import in_head
from qgoft_bench.models import ModelSpec


@register_method("full")
class Full(Method):
    """Every parameter trains; adapter_params counts the whole backbone (the papers' 184M for DeBERTaV3-base)."""

    def apply(self, model: nn.Module, spec: ModelSpec) -> nn.Module:
        model.requires_grad_(True)
        return model


register_method("linear")(Method)  # linear probing: the base class freezes everything; the harness trains the head


@register_method("bitfit")
class BitFit(Method):
    """BitFit (Ben Zaken et al. 2022): every bias of the backbone trains, linear and LayerNorm biases alike
    (DeBERTaV3-base: 102,912, the papers' 0.1M); the head's biases are the harness's to train, not counted."""

    needs_float32 = ("it trains the biases of frozen layers, which would then hold float32 and half-precision "
                     "weights together")

    def apply(self, model: nn.Module, spec: ModelSpec) -> nn.Module:
        model.requires_grad_(False)
        biases = [p for n, p in model.named_parameters()
                  if n.rpartition(".")[2] == "bias" and not in_head(n, spec.head_modules)]
        if not biases:  # e.g. LLaMA: a BitFit run would silently be linear probing
            raise ConfigError(f"method=bitfit: the {spec.family} model has no bias parameters outside its head")
        for param in biases:
            param.requires_grad_(True)
        return model
