"""Task data: ``load_task(cfg, bundle)`` -> ``TaskData`` with loaders and the task's metrics.

Loaders are registered by ``task.family`` (glue, vtab, ...). A batch is a dict of model inputs plus ``labels``.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from qgoft_bench.registry import Registry


@dataclass
class TaskData:
    train: DataLoader
    evals: dict[str, DataLoader]  # split name -> loader (e.g. {"dev": ...}, MNLI {"m": ..., "mm": ...})
    # (split name, predictions, labels) -> {metric name: value}; predictions are logits (N, C) or (N,) for regression
    compute_metrics: Callable[[str, np.ndarray, np.ndarray], dict[str, float]]


TASK_LOADERS: Registry = Registry("task family")
register_task_family = TASK_LOADERS.register


def load_task(cfg: DictConfig, bundle) -> TaskData:
    """Load the data of ``cfg.task`` for ``bundle`` (tokenizer or image transform), batch sizes from ``cfg.trainer``."""
    return TASK_LOADERS.get(cfg.task.family)(cfg, bundle)

from qgoft_bench.data import glue, vtab1k  # noqa: F401  (registers the task families)
