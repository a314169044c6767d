"""Model factory: ``build_model(model_cfg, head, num_labels)`` -> ``ModelBundle``.

Builders are registered by ``model.kind`` (``hf``: Hugging Face transformers; ``gguf``: a llama.cpp GGUF file read
by transformers; ``timm_vit``: timm Vision Transformers). The task chooses the head (``Task.head``: ``seq_cls``,
``multiple_choice``, ``span_cls``, ``qa``, ``causal_lm``, ``image_cls``); the builder puts that head on the model's backbone, or refuses in one line when the
model has no such head. Every built model is called as ``model(**batch["inputs"])``; the task computes the loss
from its outputs, so no head here is given labels.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from qgoft_bench.errors import ConfigError
from qgoft_bench.registry import Registry

# ``model.dtype`` of a transformers model: the dtype its weights are loaded in. null keeps the checkpoint's own
# (transformers' ``dtype="auto"``: float32 for the BERT-family checkpoints here, float16 for LLaMA-2) and, with
# random init, float32. What trains is float32 whatever this is (``train.run.train_in_float32``).
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class ModelSpec:
    """What a method needs to know about the model it adapts."""

    family: str  # bert | deberta | roberta | llama | vit
    head_modules: list[str] = field(default_factory=list)  # dotted module names of the task head
    train_head: bool = True  # a causal LM's pretrained lm_head is no task head: it stays frozen and uncounted


@dataclass
class ModelBundle:
    """A built model with its spec, its processor (loaded on first use, so a dry run needs no tokenizer files) and,
    for text models, the longest input its position table and tokenizer take (None: no limit known)."""

    model: nn.Module
    spec: ModelSpec
    load_processor: Callable[[], Any] = lambda: None  # a tokenizer for text models, an ImageProcessor for ViT
    max_positions: int | None = None

    @cached_property
    def processor(self) -> Any:
        """The tokenizer (text) or image processor (ViT), loaded on first use, once."""
        return self.load_processor()


MODEL_BUILDERS: Registry = Registry("model kind")
register_model_kind = MODEL_BUILDERS.register


def check_head(model_cfg: DictConfig, head: str) -> None:
    """Raise ``ConfigError`` when the model cannot carry ``head``, before anything is built (what is known from its
    config: the kind, and for transformers models the architecture)."""
    from qgoft_bench.models import gguf, hf, timm_vit

    checks = {"hf": hf.check_head, "gguf": gguf.check_head, "timm_vit": timm_vit.check_head}
    if model_cfg.kind not in checks:
        raise ConfigError(f"model.kind={model_cfg.kind!r} is not one of {', '.join(checks)}")
    checks[model_cfg.kind](model_cfg, head)


def check_source(model_cfg: DictConfig, tokenizer: bool = True) -> None:
    """Raise ``ModelSourceError`` (or ``ConfigError`` for a GGUF distribution that is not installed) when what a run
    loads cannot be had, found before anything is built: with ``model.init=pretrained`` the weights (a missing
    ``model.path``, a pinned file that fails its sha256, a hub id neither cached nor served: ``hf.check_source``),
    and with ``tokenizer`` (a run that reads data, not a dry run) a transformers model's tokenizer."""
    from qgoft_bench.models import gguf, hf, timm_vit

    if model_cfg.kind == "hf":
        hf.check_source(model_cfg, tokenizer)
    else:
        {"gguf": gguf.check_source, "timm_vit": timm_vit.check_source}[model_cfg.kind](model_cfg)


def build_model(model_cfg: DictConfig, head: str, num_labels: int) -> ModelBundle:
    """Build the model named by ``model_cfg`` with a fresh ``head`` of ``num_labels`` outputs (weights per
    ``model_cfg.init``); raises ``ConfigError`` when the model cannot carry that head, ``ModelSourceError`` when its
    weights cannot be found."""
    from qgoft_bench.models import gguf, hf, timm_vit  # noqa: F401  (registers the model kinds; heavy, so imported here)

    return MODEL_BUILDERS.get(model_cfg.kind)(model_cfg, head, num_labels)
