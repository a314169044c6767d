"""Methods that Hugging Face PEFT implements, used as PEFT ships them (never re-implemented here).

The method config names the PEFT config class (``peft_config``) and passes every other key (``r``, ``lora_alpha``,
...) to it, so a new PEFT method is one YAML file and ``method.r=2`` works on the command line. Where a harness knob
has a different name in PEFT (``block_size``), ``KNOB_RENAMES`` translates it.

Every method here merges through PEFT's ``merge_and_unload`` (LoRA, AdaLoRA, OFT, BOFT and IA3 all support it).
"""

import peft
import torch
from omegaconf import DictConfig, OmegaConf
from peft.tuners.adalora import AdaLoraLayer
from peft.tuners.boft import BOFTLayer
from peft.tuners.oft import OFTLayer
from torch import nn

from qgoft_bench.errors import ConfigError
from qgoft_bench.methods import register_method
from qgoft_bench.methods.base import Decay, Method
from qgoft_bench.models import ModelSpec

# PEFT arguments that must be positive integers (PEFT itself accepts LoRA's r=0 and fails later, in the model;
# OFT's r=0 means "derive the block count" and stays allowed)
POSITIVE_KNOBS: dict[str, tuple[str, ...]] = {
    "LoraConfig": ("r",),
    "AdaLoraConfig": ("init_r", "target_r"),
    "OFTConfig": ("oft_block_size",),
    "BOFTConfig": ("boft_block_size",),
}
# PEFT config class -> {harness knob: PEFT argument}; one harness name for one idea across methods
KNOB_RENAMES: dict[str, dict[str, str]] = {
    "OFTConfig": {"block_size": "oft_block_size"},
    "BOFTConfig": {"block_size": "boft_block_size"},
}


def _autocast_output(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    """A forward hook: under autocast, the layer's output in the autocast dtype, as a plain ``nn.Linear`` returns it.

    PEFT's OFT and BOFT layers cast their output back to their input's dtype, which is float32 under bf16 autocast
    (the LayerNorm before them runs in float32); DeBERTa's attention then fills a bf16 score tensor with float32's
    minimum and fails ("value cannot be converted to type c10::BFloat16 without overflow").
    """
    device = output.device.type
    return output.to(torch.get_autocast_dtype(device)) if torch.is_autocast_enabled(device) else output


@register_method("lora")
@register_method("ia3")
class PeftMethod(Method):
    """``get_peft_model`` with ``peft.<peft_config>(target_modules=..., **other keys)``; PEFT freezes the rest."""

    HARNESS_KEYS = ("name", "label", "peft_config", "target_modules", "decay_to")
    AUTOCAST_LAYERS: tuple[type, ...] = ()  # PEFT layers whose output must follow autocast (see _autocast_output)

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        self.peft_model: peft.PeftModel | None = None
        self.peft_config()  # checks the keys now, before any model is built


    def peft_kwargs(self) -> dict:
        """Every method key PEFT should see, under PEFT's names."""
        renames = KNOB_RENAMES.get(self.cfg.peft_config, {})
        kwargs = {k: v for k, v in OmegaConf.to_container(self.cfg, resolve=True).items() if k not in self.HARNESS_KEYS}
        return {renames.get(k, k): v for k, v in kwargs.items()}

    def peft_config(self) -> peft.PeftConfig:
        """The PEFT config; ``ConfigError`` for a key PEFT does not know or a rank or block size below 1."""
        config_class = getattr(peft, self.cfg.peft_config, None)
        if config_class is None:
            raise ConfigError(f"method.peft_config={self.cfg.peft_config} is not a PEFT config class "
                              f"(peft {peft.__version__})")
        kwargs = self.peft_kwargs()
        ours = {peft_name: knob for knob, peft_name in KNOB_RENAMES.get(self.cfg.peft_config, {}).items()}
        for knob in POSITIVE_KNOBS.get(self.cfg.peft_config, ()):
            if knob in kwargs and not (isinstance(kwargs[knob], int) and kwargs[knob] >= 1):
                raise ConfigError(f"method.{ours.get(knob, knob)}={kwargs[knob]!r} must be an integer >= 1 for "
                                  f"{self.cfg.name}")
        try:
            return config_class(target_modules=list(self.cfg.target_modules), **kwargs)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"method={self.cfg.name}: {str(err).splitlines()[0]}") from None

    def apply(self, model: nn.Module, spec: ModelSpec) -> nn.Module:
        self.peft_model = peft.get_peft_model(model, self.peft_config())
        for layer in self.peft_layers(self.AUTOCAST_LAYERS):
            layer.register_forward_hook(_autocast_output)
        return self.peft_model

    def merge(self, model: nn.Module) -> nn.Module:
        return self.peft_model.merge_and_unload()

    def decay(self, name: str, param: nn.Parameter) -> Decay:
        """IA3's scales multiply activations and start at 1: ``method.decay_to`` (init: toward 1, not 0)."""
        if ".ia3_" in name:
            return self.cfg.decay_to
        return super().decay(name, param)

    def peft_layers(self, kind: type | tuple[type, ...]) -> list[nn.Module]:
        """The PEFT layers of ``kind`` that ``apply`` injected."""
        return [m for m in self.peft_model.modules() if isinstance(m, kind)]


@register_method("oft")
class OFTMethod(PeftMethod):
    """OFT (Qiu et al. 2023) from PEFT: a block-diagonal orthogonal R of ``in_features / b`` blocks of size b x b,
    applied on the input side of each target layer (``method.block_size`` -> PEFT's ``oft_block_size``).

    How PEFT 0.21.2 stores a block: ``oft_R.<adapter>.weight`` has shape (in_features / b, b (b - 1) / 2), the strict
    upper triangle of a skew-symmetric Q; the orthogonal block is its Cayley transform (I + Q)(I - Q)^-1 (a Neumann
    series by default), so the diagonal and the lower triangle are implied, not stored. ``adapter_params`` is this
    stored count (DeBERTaV3-base, six linears, b = 8: 290,304). The papers count full b x b blocks, in_features * b
    per layer (663,552), reported as ``adapter_params_paper``.
    """

    AUTOCAST_LAYERS = (OFTLayer,)

    def counts(self, model: nn.Module, spec: ModelSpec) -> dict[str, int]:
        paper = sum(layer.r[name] * layer.oft_block_size[name] ** 2
                    for layer in self.peft_layers(OFTLayer) for name in layer.r)
        return {**super().counts(model, spec), "adapter_params_paper": paper}


@register_method("boft")
class BOFTMethod(PeftMethod):
    """BOFT (Liu et al. 2024) from PEFT (``method.block_size`` -> ``boft_block_size``).

    PEFT stores full b x b blocks (``boft_R``: butterfly factors x blocks x b x b) plus a per-output scale ``boft_s``.
    Without its CUDA extension (any CPU run) PEFT silently sets ``boft_n_butterfly_factor`` to 1, i.e. block-diagonal
    OFT, so the factor actually built is reported as ``boft_butterfly_factor``.
    """

    AUTOCAST_LAYERS = (BOFTLayer,)

    def counts(self, model: nn.Module, spec: ModelSpec) -> dict[str, int]:
        factors = {layer.boft_R[name].shape[0] for layer in self.peft_layers(BOFTLayer) for name in layer.boft_R}
        return {**super().counts(model, spec), "boft_butterfly_factor": max(factors)}


@register_method("adalora")
class AdaLoRAMethod(PeftMethod):
    """AdaLoRA (Zhang et al. 2023) from PEFT: SVD-form updates P diag(E) Q whose ranks are pruned from ``init_r`` to
    an average ``target_r`` by PEFT's ``update_and_allocate``, called from the ``after_step`` hook.

    Three pieces of glue, because our trainer computes the loss from the logits itself:
    - ``total_step: null`` takes the trainer's planned number of updates (known only once the data are loaded):
      the PEFT config is built with the smallest schedule PEFT accepts and PEFT's own ``set_total_step`` sets the
      real one at the first update, before the first reallocation reads it.
    - PEFT adds AdaLoRA's orthogonality penalty only to ``outputs.loss`` (absent without labels), so ``regularizer``
      returns the same term: orth_reg_weight * the mean of ||Q Q^T - I||_F and ||P^T P - I||_F over layers.
    - PEFT 0.21.2 leaves the rank counter ``ranknum`` (a divisor in the forward) trainable; AdaLoRA keeps it fixed.

    ``adapter_params`` counts what PEFT stores at ``init_r``; ``adapter_params_budget`` is the final budget,
    ``target_r`` triplets per layer on average (the paper's 0.32M for target_r = 2 depends on where the ranks go).
    """

    def __init__(self, cfg: DictConfig) -> None:
        self.planned_total = cfg.get("total_step") is None  # the trainer's number of updates, set at the first one
        self.layers: list[nn.Module] = []
        super().__init__(cfg)  # builds the PEFT config (peft_kwargs reads planned_total)

    def peft_kwargs(self) -> dict:
        kwargs = super().peft_kwargs()
        if self.planned_total:
            kwargs["total_step"] = kwargs.get("tinit", 0) + kwargs.get("tfinal", 0) + 1
        return kwargs

    def apply(self, model: nn.Module, spec: ModelSpec) -> nn.Module:
        model = super().apply(model, spec)
        for name, param in model.named_parameters():
            if ".ranknum." in name:
                param.requires_grad_(False)
        self.layers = self.peft_layers(AdaLoraLayer)
        return model

    def regularizer(self) -> torch.Tensor | None:
        weight = self.peft_model.peft_config["default"].orth_reg_weight
        if weight == 0:
            return None
        terms = []
        for layer in self.layers:
            for name in layer.lora_A:  # Q = lora_A (r x in): orthonormal rows; P = lora_B (out x r): columns
                for gram in (layer.lora_A[name] @ layer.lora_A[name].T, layer.lora_B[name].T @ layer.lora_B[name]):
                    terms.append(torch.linalg.matrix_norm(gram - torch.eye(len(gram), device=gram.device)))
        return weight * torch.stack(terms).mean()

    def after_step(self, step: int, total_steps: int) -> None:
        config = self.peft_model.peft_config["default"]
        if self.planned_total and step == 0:
            if config.tinit >= total_steps - config.tfinal:
                raise ConfigError(f"AdaLoRA: method.tinit={config.tinit} + method.tfinal={config.tfinal} leave no "
                                  f"budgeting phase in {total_steps} updates; lower them or train longer")
            self.peft_model.base_model.rankallocator.set_total_step(total_steps)
        self.peft_model.base_model.update_and_allocate(step)

    def counts(self, model: nn.Module, spec: ModelSpec) -> dict[str, int]:
        target_r = self.peft_model.peft_config["default"].target_r
        per_rank = sum(layer.in_features + layer.out_features + 1 for layer in self.layers)
        return {**super().counts(model, spec), "adapter_params_budget": target_r * per_rank}
