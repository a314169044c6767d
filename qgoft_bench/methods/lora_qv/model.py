"""LoRA on q and v inside a fused qkv projection (timm ViT): the LoRA row of the VTAB tables (NOAH, FacT, qGOFT
Table 3: r=8 on q and v, 294,912 on ViT-B/16). PEFT adapts a whole linear, which on timm's fused attn.qkv would be
q, k and v with one shared A (the same count at r=8, a different update)."""

from omegaconf import DictConfig
from torch import nn

from qgoft_bench.errors import ConfigError
from qgoft_bench.methods import register_method
from qgoft_bench.methods.base import Method
from qgoft_bench.methods.lora_qv.config import FusedLoRAConfig
from qgoft_bench.methods.lora_qv.layer import FusedLoRALayer
from qgoft_bench.methods.targets import find_targets, set_submodule, to_linears
from qgoft_bench.models import ModelSpec


@register_method("lora_qv")
class FusedLoRAMethod(Method):
    """Freeze the backbone; wrap every target in a ``FusedLoRALayer`` on the configured parts."""

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        self.config = FusedLoRAConfig.from_cfg(cfg)

    def apply(self, model: nn.Module, spec: ModelSpec) -> nn.Module:
        model.requires_grad_(False)
        c = self.config
        blocks = [c.fused_order.index(p) for p in c.parts]
        fix = ("lora_qv adapts fused q,k,v linears (timm's ViT qkv); for separate q and v linears use method=lora "
               "with method.target_modules set to them")
        try:
            targets = find_targets(model, c.target_modules, (nn.Linear,))
        except ConfigError:
            raise ConfigError(f"method.target_modules={list(c.target_modules)} matches no linear layer of the model: "
                              f"{fix}") from None
        for name, layer in targets:
            if layer.out_features % len(c.fused_order):
                raise ConfigError(f"{name} (out_features {layer.out_features}) is not {len(c.fused_order)} equal "
                                  f"parts ({', '.join(c.fused_order)}): {fix}")
        for name, layer in targets:
            set_submodule(model, name, FusedLoRALayer(layer, len(c.fused_order), blocks, c.r, c.lora_alpha,
                                                      c.lora_dropout))
        return model

    def merge(self, model: nn.Module) -> nn.Module:
        return to_linears(model, FusedLoRALayer)
