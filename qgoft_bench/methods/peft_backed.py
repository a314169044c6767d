"""Methods that Hugging Face PEFT implements, used as PEFT ships them (never re-implemented here).

The method config names the PEFT config class (``peft_config``) and passes every other key (``r``, ``lora_alpha``,
...) to it, so a new PEFT method is one YAML file and ``method.r=2`` works on the command line. Where a harness knob
has a different name in PEFT (``block_size``), ``KNOB_RENAMES`` translates it.

Every method here merges through PEFT's ``merge_and_unload`` (LoRA, AdaLoRA, OFT, BOFT, IA3, and the orthogonal
family's HRA, RoAd, PSOFT, FRoD, DeLoRA and OSF all support it).
"""

import dataclasses
import logging
import os
import re
import typing
import warnings
from types import NoneType
from typing import Any

import peft
import torch
from omegaconf import DictConfig, OmegaConf
from peft.tuners.adalora import AdaLoraLayer
from peft.tuners.boft import BOFTLayer
from peft.tuners.delora import DeloraLayer
from peft.tuners.frod import FrodLayer
from peft.tuners.hra import HRALayer
from peft.tuners.oft import OFTLayer
from peft.tuners.osf import OSFLayer
from torch import nn

from qgoft_bench.errors import ConfigError
from qgoft_bench.methods import register_method
from qgoft_bench.methods.base import Decay, Method
from qgoft_bench.methods.knobs import fits
from qgoft_bench.methods.targets import find_targets
from qgoft_bench.models import ModelSpec

# PEFT arguments that must be positive integers (PEFT itself accepts LoRA's r=0 and fails later, in the model;
# OFT's r=0 means "derive the block count" and stays allowed)
POSITIVE_KNOBS: dict[str, tuple[str, ...]] = {
    "LoraConfig": ("r",),
    "AdaLoraConfig": ("init_r", "target_r"),
    "OFTConfig": ("oft_block_size",),
    "BOFTConfig": ("boft_block_size", "boft_n_butterfly_factor"),
    "HRAConfig": ("r",),
    "RoadConfig": ("group_size",),
    "PsoftConfig": ("r",),
    "DeloraConfig": ("r",),
    "OSFConfig": ("effective_rank", "trainable_rank"),  # null (PEFT's default) allowed
}
# of those, the ones PEFT also takes as a fraction in (0, 1) of each layer's min(out, in)
FRACTION_OR_RANK: dict[str, tuple[str, ...]] = {"OSFConfig": ("effective_rank",)}
# PEFT arguments that must be numbers > 0 (PEFT takes a negative scale or boundary and trains with it)
POSITIVE_NUMBERS: dict[str, tuple[str, ...]] = {
    "LoraConfig": ("lora_alpha",),
    "PsoftConfig": ("psoft_alpha",),
    "DeloraConfig": ("delora_lambda",),
    "FrodConfig": ("regularization_alpha",),  # FRoD inverts Q^T Q + alpha I
}
# dropout probabilities, in [0, 1)
FRACTIONS = ("lora_dropout", "module_dropout", "psoft_dropout", "boft_dropout", "frod_dropout")
# fractions that may reach 1: FRoD's share of off-diagonal entries (0: the diagonal only)
SHARES = ("sparse_rate",)
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
    # parameter-name fragments of multiplicative adapters that start at the identity: weight decay pulls them toward
    # their start (``method.decay_to``), not toward zero
    DECAY_TO_INIT: tuple[str, ...] = (".ia3_",)

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
        """The PEFT config; ``ConfigError`` for a key PEFT's config class does not have, a value not of its field's
        number type (null, a string), a rank or block size below 1, a scale <= 0, a rate out of range."""
        config_class = getattr(peft, self.cfg.peft_config, None)
        if config_class is None:
            raise ConfigError(f"method.peft_config={self.cfg.peft_config} is not a PEFT config class "
                              f"(peft {peft.__version__})")
        kwargs = self.peft_kwargs()
        ours = {peft_name: knob for knob, peft_name in KNOB_RENAMES.get(self.cfg.peft_config, {}).items()}
        known = {f.name for f in dataclasses.fields(config_class)}
        unknown = sorted(ours.get(k, k) for k in set(kwargs) - known)
        if unknown:
            raise ConfigError(f"unknown key(s) for method {self.cfg.name!r}: {', '.join(unknown)} (not fields of "
                              f"peft.{self.cfg.peft_config})")
        hints = typing.get_type_hints(config_class)
        positive = POSITIVE_KNOBS.get(self.cfg.peft_config, ())
        for knob in set(kwargs) & {k for k, hint in hints.items() if hint in (int, float)} - set(positive):
            if not fits(kwargs[knob], float):  # PEFT's annotations are loose (lora_alpha: int takes 0.5)
                raise ConfigError(f"method.{ours.get(knob, knob)}={kwargs[knob]!r} must be a number for "
                                  f"{self.cfg.name}")
        for knob in positive:
            value = kwargs.get(knob)
            if value is None and (knob not in kwargs or NoneType in typing.get_args(hints[knob])):
                continue  # OSF's effective_rank: null is PEFT's default
            fraction = knob in FRACTION_OR_RANK.get(self.cfg.peft_config, ())
            if fraction and isinstance(value, float) and 0 < value < 1:
                continue
            if not (fits(value, int) and value >= 1):
                raise ConfigError(f"method.{ours.get(knob, knob)}={value!r} must be an integer >= 1"
                                  + (" or a fraction in (0, 1)" if fraction else "") + f" for {self.cfg.name}")
        for knob in set(POSITIVE_NUMBERS.get(self.cfg.peft_config, ())) & set(kwargs):
            if not (fits(kwargs[knob], float) and kwargs[knob] > 0):
                raise ConfigError(f"method.{knob}={kwargs[knob]!r} must be a number > 0 for {self.cfg.name}")
        for knob in set(FRACTIONS) & set(kwargs):
            if not (fits(kwargs[knob], float) and 0 <= kwargs[knob] < 1):
                raise ConfigError(f"method.{knob}={kwargs[knob]!r} must be a probability in [0, 1) for "
                                  f"{self.cfg.name}")
        for knob in set(SHARES) & set(kwargs):
            if not (fits(kwargs[knob], float) and 0 <= kwargs[knob] <= 1):
                raise ConfigError(f"method.{knob}={kwargs[knob]!r} must be a number in [0, 1] for {self.cfg.name}")
        decay_to = self.cfg.get("decay_to")
        if decay_to is not None and decay_to not in typing.get_args(Decay):
            raise ConfigError(f"method.decay_to={decay_to!r}; choose one of {', '.join(typing.get_args(Decay))}")
        booleans = {f.name for f in dataclasses.fields(config_class) if f.type in (bool, "bool")}
        for knob in booleans & set(kwargs):  # PEFT would take any string as true
            if not fits(kwargs[knob], bool):
                raise ConfigError(f"method.{knob}={kwargs[knob]!r} must be true or false for {self.cfg.name}")
        try:
            return config_class(target_modules=list(self.cfg.target_modules), **kwargs)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"method={self.cfg.name}: {str(err).splitlines()[0]}") from None

    def apply(self, model: nn.Module, spec: ModelSpec) -> nn.Module:
        """PEFT's adapter on ``model``; ``ConfigError`` (one line) when PEFT refuses the model's shapes for these
        settings (a block size or group size that does not divide a layer's width, a rank above it)."""
        try:
            with warnings.catch_warnings():  # PeftModel reads a property transformers deprecated: nothing to act on
                warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated",
                                        category=FutureWarning)
                self.peft_model = peft.get_peft_model(model, self.peft_config())
        except ValueError as err:
            raise ConfigError(f"method={self.cfg.name} cannot adapt this model with these settings: "
                              f"{' '.join(str(err).split())} (PEFT's check; change the method.* setting it names, or "
                              "the model)") from None
        for layer in self.peft_layers(self.AUTOCAST_LAYERS):
            layer.register_forward_hook(_autocast_output)
        return self.peft_model

    def merge(self, model: nn.Module) -> nn.Module:
        return self.peft_model.merge_and_unload()

    def decay(self, name: str, param: nn.Parameter) -> Decay:
        """IA3's scales multiply activations and start at 1 (RoAd's scales and angles, PSOFT's magnitude vectors
        likewise start at the identity): ``method.decay_to`` (init: toward their start, not 0)."""
        if any(fragment in name for fragment in self.DECAY_TO_INIT):
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

    def __init__(self, cfg: DictConfig) -> None:
        if cfg.get("r"):  # PEFT takes r or oft_block_size, not both; block_size=0 would file the run as oft_b0
            raise ConfigError(f"method.r={cfg.r} is PEFT's OFT block count, which the harness leaves at 0: the block "
                              "size fixes the form (the label oft_b<size>, the papers' counts); set method.block_size "
                              "to the input width / r instead")
        super().__init__(cfg)

    def apply(self, model: nn.Module, spec: ModelSpec) -> nn.Module:
        """PEFT's adapter; ``ConfigError`` when ``method.block_size`` does not divide an adapted layer's input width
        (PEFT would silently build another block size, and the run's label would name the one asked for)."""
        peft_model = super().apply(model, spec)
        asked = self.cfg.get("block_size")
        for module_name, layer in self.peft_model.named_modules():
            if isinstance(layer, OFTLayer) and asked and any(b != asked for b in layer.oft_block_size.values()):
                raise ConfigError(f"method.block_size={asked} does not divide the input width {layer.in_features} "
                                  f"of {module_name}: set method.block_size to a divisor of every adapted layer's "
                                  "input width (PEFT would build other blocks than the label says)")
        return peft_model

    def counts(self, model: nn.Module, spec: ModelSpec) -> dict[str, int]:
        paper = sum(layer.r[name] * layer.oft_block_size[name] ** 2
                    for layer in self.peft_layers(OFTLayer) for name in layer.r)
        return {**super().counts(model, spec), "adapter_params_paper": paper}


@register_method("boft")
class BOFTMethod(PeftMethod):
    """BOFT (Liu et al. 2024) from PEFT (``method.block_size`` -> ``boft_block_size``).

    PEFT stores full b x b blocks (``boft_R``: butterfly factors x blocks x b x b) plus a per-output scale ``boft_s``.
    Without its CUDA extension (any CPU run) PEFT silently sets ``boft_n_butterfly_factor`` to 1, i.e. block-diagonal
    OFT. The harness refuses that substitution (a run asking m = 2 would be filed, and skipped as done, under the
    label and run id of a true m = 2 run), and reports the factor built as ``boft_butterfly_factor``.
    """

    AUTOCAST_LAYERS = (BOFTLayer,)

    def apply(self, model: nn.Module, spec: ModelSpec) -> nn.Module:
        """PEFT's adapter; raises ``ConfigError`` when the butterfly factor built is not the one configured (PEFT
        says so only in a warning among its others), before any update.

        ``CC`` and ``CXX`` are restored afterwards: PEFT 0.21.2 sets both to ``gcc`` around its CUDA extension's
        build (``peft/tuners/boft/layer.py``, ``patch_environment``, restored only after the ``yield``, not in a
        ``finally``), so a build that fails, as on every CPU machine, leaves them set for the rest of the process,
        and the next C++ build in it (the rotation kernel's) sees another compiler and rebuilds."""
        saved = {key: os.environ.get(key) for key in ("CC", "CXX")}
        # torch's CUDA probe logs "No CUDA runtime is found" on every CPU machine; the refusal below says what matters
        probe = logging.getLogger("torch.utils.cpp_extension")
        level = probe.level
        probe.setLevel(logging.ERROR)
        try:
            model = super().apply(model, spec)
        finally:
            probe.setLevel(level)
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        asked, built = self.cfg.get("boft_n_butterfly_factor", 1), self.butterfly_factor()
        if built != asked:
            raise ConfigError(f"BOFT: PEFT built {built} butterfly factor(s), not the configured "
                              f"method.boft_n_butterfly_factor={asked} (its BOFT CUDA extension did not load here), "
                              f"and the run would be filed as {self.cfg.label}: set "
                              f"method.boft_n_butterfly_factor={built}, or run where the extension builds (CUDA)")
        return model

    def butterfly_factor(self) -> int:
        """The number of butterfly factors PEFT actually built (the first dimension of every ``boft_R``)."""
        return max(layer.boft_R[name].shape[0] for layer in self.peft_layers(BOFTLayer) for name in layer.boft_R)

    def counts(self, model: nn.Module, spec: ModelSpec) -> dict[str, int]:
        return {**super().counts(model, spec), "boft_butterfly_factor": self.butterfly_factor()}

    def report(self, model: nn.Module) -> dict[str, int]:
        """The form that ran, in the record beside the counts: ``boft_butterfly_factor``."""
        return {"boft_butterfly_factor": self.butterfly_factor()}


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
        if self.planned_total and config.total_step != total_steps:  # the first update (of every attempt)
            if config.tinit >= total_steps - config.tfinal:
                raise ConfigError(f"AdaLoRA: method.tinit={config.tinit} + method.tfinal={config.tfinal} leave no "
                                  f"budgeting phase in {total_steps} updates; lower them or train longer")
            self.peft_model.base_model.rankallocator.set_total_step(total_steps)
        self.peft_model.base_model.update_and_allocate(step)

    def state_dict(self) -> dict[str, Any]:
        """The rank allocator's importance scores and averages, and the rank pattern once it is fixed."""
        allocator = self.peft_model.base_model.rankallocator
        return {"ipt": allocator.ipt, "exp_avg_ipt": allocator.exp_avg_ipt, "exp_avg_unc": allocator.exp_avg_unc,
                "rank_pattern": self.peft_model.peft_config["default"].rank_pattern}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        allocator = self.peft_model.base_model.rankallocator
        allocator.ipt, allocator.exp_avg_ipt, allocator.exp_avg_unc = (state["ipt"], state["exp_avg_ipt"],
                                                                      state["exp_avg_unc"])
        self.peft_model.peft_config["default"].rank_pattern = state["rank_pattern"]

    def counts(self, model: nn.Module, spec: ModelSpec) -> dict[str, int]:
        target_r = self.peft_model.peft_config["default"].target_r
        per_rank = sum(layer.in_features + layer.out_features + 1 for layer in self.layers)
        return {**super().counts(model, spec), "adapter_params_budget": target_r * per_rank}


# The orthogonal family in PEFT 0.21.2 beside OFT and BOFT: used as PEFT ships them. HRA, FRoD, DeLoRA and OSF layers
# return float32 under bf16 autocast (seen on CPU autocast), as OFT's do, hence AUTOCAST_LAYERS.


@register_method("hra")
class HRAMethod(PeftMethod):
    """HRA (Yuan et al., NeurIPS 2024) from PEFT: the input of each target layer is multiplied by a chain of ``r``
    Householder reflections H_i = I - 2 u_i u_i^T / |u_i|^2, one u_i (in_features) per reflection, so a layer
    stores r * in_features parameters (``hra_u``). PEFT starts from pairs of equal u's (the product is I), which
    needs an even r. PEFT does not implement the paper's orthogonality penalty on the u's; ``apply_GS`` (Gram-Schmidt)
    is its alternative."""

    AUTOCAST_LAYERS = (HRALayer,)

    def peft_config(self) -> peft.PeftConfig:
        """PEFT's ``HRAConfig``; ``ConfigError`` for an odd ``r`` with PEFT's identity start (``init_weights``): PEFT
        would only warn and start from r random reflections, a model that is not the pre-trained one at step 0."""
        config = super().peft_config()
        if config.init_weights and config.r % 2:
            raise ConfigError(f"method.r={config.r} is odd: HRA starts at the pre-trained model only from pairs of "
                              f"equal reflections; use an even r such as {config.r + 1}")
        return config


@register_method("road")
class RoadMethod(PeftMethod):
    """RoAd (Liao et al., NeurIPS 2024) from PEFT: the output of each target layer is rotated (and scaled) in 2D
    pairs; ``road_1`` stores out_features parameters per layer (one angle and one scale per pair, shared by the
    pair), ``road_2`` twice, ``road_4`` four times as many. The scales start at 1 and the angles at 0, so weight decay
    pulls them toward that start (``method.decay_to``)."""

    DECAY_TO_INIT = (".road_",)

    def apply(self, model: nn.Module, spec: ModelSpec) -> nn.Module:
        """PEFT's adapter; ``ConfigError`` naming the first target whose output width ``method.group_size`` does not
        divide (PEFT's own message names neither layer nor width)."""
        size = self.cfg.get("group_size")
        if fits(size, int) and size >= 1:  # else peft_config's check says what is wrong with it
            for name, layer in find_targets(model, self.cfg.target_modules, (nn.Linear,)):
                if layer.out_features % size:
                    raise ConfigError(f"method.group_size={size} does not divide the output width "
                                      f"{layer.out_features} of {name}: set method.group_size to a divisor of every "
                                      "adapted layer's output width")
        return super().apply(model, spec)


@register_method("psoft")
class PsoftMethod(PeftMethod):
    """PSOFT (PEFT's ``PsoftConfig``): an r x r orthogonal R (Cayley of a skew-symmetric Q) between the frozen
    principal-subspace factors A and B of the weight (from its SVD), dW = B (R - I) A, with learned magnitude vectors
    on both sides of R. A layer stores r (r - 1) / 2 + 2 r parameters, whatever its shape. The magnitude vectors
    start at 1: weight decay pulls them toward that start (``method.decay_to``)."""

    DECAY_TO_INIT = (".vector_a", ".vector_b")


@register_method("frod")
class FrodMethod(PeftMethod):
    """FRoD (PEFT's ``FrodConfig``, AAAI 2026): a shared basis per module category from a joint decomposition of the
    frozen weights of all blocks, and per layer a trainable diagonal (in_features) plus sparse off-diagonal entries
    (floor(sparse_rate * in_features^2), at fixed random positions). The basis needs real weights: no meta device."""

    AUTOCAST_LAYERS = (FrodLayer,)
    needs_weights = "decomposes the frozen weights"

    def apply(self, model: nn.Module, spec: ModelSpec) -> nn.Module:
        if any(p.is_meta for p in model.parameters()):
            raise ConfigError(f"method=frod {self.needs_weights}, which a meta-device model does not have; "
                              "use model.init=random (architecture with random weights) or pretrained")
        return super().apply(model, spec)


@register_method("delora")
class DeloraMethod(PeftMethod):
    """DeLoRA (Bini et al., ICLR 2025) from PEFT: dW = B diag(lambda / r / (|a_i| |b_i|)) A diag(|W_:,j|), a
    LoRA-shaped update normalised per rank, scaled by a learned boundary lambda (one per layer) and the frozen
    weight's column norms, so its norm is bounded by lambda: r (in + out) + 1 parameters per layer."""

    AUTOCAST_LAYERS = (DeloraLayer,)


@register_method("osf")
class OSFMethod(PeftMethod):
    """OSF (PEFT's ``OSFConfig``, orthogonal subspace fine-tuning): each target weight is split by its SVD into a
    frozen top-``effective_rank`` subspace and a trainable remainder U_low S_low V_low, whose gradients PEFT projects
    orthogonal to the frozen subspace (tensor hooks, so the harness's own loop keeps them). A layer with trainable rank
    k = min(out, in) - effective_rank stores k (out + in + 1) parameters.

    ``method.trainable_rank`` (ours) fixes k for every target instead (PEFT's ``effective_rank`` is per matrix and
    its default keeps half the spectrum frozen, half trainable): the per-module effective ranks go to PEFT's
    ``rank_pattern``."""

    HARNESS_KEYS = (*PeftMethod.HARNESS_KEYS, "trainable_rank")
    AUTOCAST_LAYERS = (OSFLayer,)

    def __init__(self, cfg: DictConfig) -> None:
        self.rank_pattern: dict[str, int] = {}
        rank = cfg.get("trainable_rank")
        if rank is not None and not (isinstance(rank, int) and rank >= 1):
            raise ConfigError(f"method.trainable_rank={rank!r} must be an integer >= 1 (or null: PEFT's effective_rank)")
        if rank is not None and cfg.get("effective_rank") is not None:
            raise ConfigError(f"method.trainable_rank={rank} and method.effective_rank={cfg.effective_rank} both fix "
                              "the split; set one (the other null)")
        super().__init__(cfg)

    def peft_kwargs(self) -> dict:
        kwargs = super().peft_kwargs()
        if self.rank_pattern:
            kwargs["rank_pattern"] = self.rank_pattern
        return kwargs

    def apply(self, model: nn.Module, spec: ModelSpec) -> nn.Module:
        rank = self.cfg.get("trainable_rank")
        if rank is not None:
            for name, layer in find_targets(model, self.cfg.target_modules, (nn.Linear,)):
                smallest = min(layer.weight.shape)
                if rank > smallest:
                    raise ConfigError(f"method.trainable_rank={rank} is more than {name} has ({smallest})")
                self.rank_pattern[rf"(^|\.){re.escape(name)}$"] = smallest - rank
        model = super().apply(model, spec)
        if not any(p.numel() for layer in self.peft_layers(OSFLayer) for p in layer.parameters() if p.requires_grad):
            raise ConfigError(f"method.effective_rank={self.cfg.effective_rank} freezes every singular direction of "
                              "every target, leaving nothing to train; lower it (or null: PEFT's half)")
        return model
