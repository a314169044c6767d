"""Methods that Hugging Face PEFT implements, used as PEFT ships them (never re-implemented here).

The method config names the PEFT config class (``peft_config``) and passes every other key (``r``, ``lora_alpha``,
...) to it, so a new PEFT method is one YAML file and ``method.r=2`` works on the command line.
"""

import peft
from omegaconf import DictConfig, OmegaConf
from torch import nn

from qgoft_bench.errors import ConfigError
from qgoft_bench.methods import register_method
from qgoft_bench.methods.base import Method, ModelSpec


@register_method("lora")
class PeftMethod(Method):
    """``get_peft_model`` with ``peft.<peft_config>(target_modules=..., **other keys)``; PEFT freezes the rest."""

    HARNESS_KEYS = ("name", "label", "peft_config", "target_modules")

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        self.peft_model: peft.PeftModel | None = None

    def peft_config(self) -> peft.PeftConfig:
        config_class = getattr(peft, self.cfg.peft_config, None)
        if config_class is None:
            raise ConfigError(f"method.peft_config={self.cfg.peft_config} is not a PEFT config class "
                              f"(peft {peft.__version__})")
        kwargs = {k: v for k, v in OmegaConf.to_container(self.cfg, resolve=True).items() if k not in self.HARNESS_KEYS}
        return config_class(target_modules=list(self.cfg.target_modules), **kwargs)

    def apply(self, model: nn.Module, spec: ModelSpec) -> nn.Module:
        self.peft_model = peft.get_peft_model(model, self.peft_config())
        return self.peft_model

    def merge(self, model: nn.Module) -> nn.Module:
        return self.peft_model.merge_and_unload()
