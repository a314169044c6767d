"""Model factory: ``build_model(model_cfg, task_cfg)`` -> ``ModelBundle``.

Builders are registered by ``model.kind`` (``hf_seq_cls``, ``timm_vit``, ``hf_causal_lm``). Every built model is
called as ``model(**inputs)`` with the batch minus ``labels`` and returns an object with ``.logits``; the trainer
computes the task loss itself.
"""

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig
from torch import nn

from qgoft_bench.methods.base import ModelSpec
from qgoft_bench.registry import Registry


@dataclass
class ModelBundle:
    model: nn.Module
    spec: ModelSpec
    processor: Any = None  # a tokenizer for text models, an image transform config for vision models


MODEL_BUILDERS: Registry = Registry("model kind")
register_model_kind = MODEL_BUILDERS.register


def build_model(model_cfg: DictConfig, task_cfg: DictConfig) -> ModelBundle:
    """Build the model named by ``model_cfg`` with a head for ``task_cfg`` (weights per ``model_cfg.init``)."""
    return MODEL_BUILDERS.get(model_cfg.kind)(model_cfg, task_cfg)

from qgoft_bench.models import hf, timm_vit  # noqa: F401  (registers the model kinds)
