"""Classification and regression over model ``.logits``: the loss and evaluation GLUE, SuperGLUE and VTAB-1k share.

Outputs are ``.logits`` of shape (N, C), class scores (cross-entropy; predictions by argmax: sequence classes,
the choices of a multiple-choice head, a span pair's classes, image classes), or (N, 1), one regression score
(``num_labels`` 1, as STS-B: mean squared error; predictions are the scores). Targets are ``{"labels": (N,)}``.
"""

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset

from qgoft_bench.errors import ConfigError, DataError
from qgoft_bench.tasks.base import Batching, Metric, Predict, Task, make_loader
from qgoft_bench.tasks.metrics import METRICS, compute


class TargetSplitter:
    """Wraps a collate function: its output dict becomes ``{"inputs": ..., "targets": {"labels": ...}}``
    (a class, not a closure, so DataLoader workers can pickle it)."""

    def __init__(self, collate: Callable[[list], dict], target_keys: Sequence[str] = ("labels",)) -> None:
        self.collate = collate
        self.target_keys = tuple(target_keys)

    def __call__(self, features: list) -> dict[str, dict[str, torch.Tensor]]:
        batch = dict(self.collate(features))
        targets = {key: batch.pop(key) for key in self.target_keys}
        return {"inputs": batch, "targets": targets}


class ClassificationTask(Task):
    """Subclasses implement ``read`` and ``encode``; ``encode`` calls ``set_batches`` with the encoded splits.

    Task config keys: ``num_labels``, ``metrics`` (names in ``metrics.METRICS``), ``headline_metric``. With several
    evaluation splits (MNLI matched and mismatched; Fu et al.'s val and test) every metric name gets the split as a
    suffix (``accuracy_mm``); a family with a ``selection_split`` picks the best epoch by its headline there.
    """

    eval_split_names: Sequence[str] = ("dev",)
    selection_split: str | None = None  # with several eval splits: the one whose headline picks the best epoch
    headline_key: str = "headline_metric"  # the task config key that names the headline metric

    def __init__(self, cfg: DictConfig, data: DictConfig) -> None:
        super().__init__(cfg, data)
        self.num_labels = int(cfg.num_labels)
        self.metric_names = list(cfg.metrics)
        splits = list(self.eval_split_names)
        suffixes = [f"_{s}" for s in splits] if len(splits) > 1 else [""]
        unknown = [name for name in self.metric_names if name not in METRICS]
        if unknown:
            raise ConfigError(f"task.metrics: unknown {unknown}; known: {', '.join(METRICS)}")
        self.metrics = tuple(Metric(f"{name}{suffix}") for suffix in suffixes for name in self.metric_names)
        headline = cfg[self.headline_key]
        self.headline = f"{headline}_{self.selection_split}" if self.selection_split else headline
        if self.headline not in [m.name for m in self.metrics]:
            raise ConfigError(f"task.headline_metric={self.headline!r} is not one of the task's metrics: "
                              f"{', '.join(m.name for m in self.metrics)}")
        self.train_set: Dataset | None = None
        self.eval_loaders: dict[str, DataLoader] = {}  # split -> loader in file order
        self._collate: Callable | None = None
        self._batching: Batching | None = None

    def set_batches(self, batching: Batching, collate: Callable | None, train: Dataset,
                    evals: dict[str, Dataset]) -> None:
        """Keep the encoded splits; evaluation loaders keep file order."""
        self._batching, self._collate, self.train_set = batching, collate, train
        self.eval_loaders = {split: make_loader(data, batching.eval_batch_size, collate, batching.num_workers)
                             for split, data in evals.items()}

    def train_batches(self, shuffle_seed: int) -> DataLoader:
        return make_loader(self.train_set, self._batching.batch_size, self._collate, self._batching.num_workers,
                           shuffle_seed)

    def loss(self, outputs: Any, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = outputs.logits.float()  # float32 even under bf16 autocast
        labels = targets["labels"]
        if self.num_labels == 1:
            return F.mse_loss(logits.squeeze(-1), labels.float())
        return F.cross_entropy(logits, labels)

    def evaluate(self, predict: Predict) -> dict[str, float]:
        several = len(self.eval_loaders) > 1
        metrics: dict[str, float] = {}
        for split, loader in self.eval_loaders.items():
            logits, labels = [], []
            for batch in loader:
                logits.append(predict(batch["inputs"]).logits.float().cpu())
                labels.append(batch["targets"]["labels"])
            scores = torch.cat(logits).numpy()
            metrics.update(compute(self.metric_names, scores, torch.cat(labels).numpy(),
                                   suffix=f"_{split}" if several else ""))
        return metrics


def label_ids(values: Sequence, names: Sequence | None, where: Callable[[int], str], num_labels: int) -> np.ndarray:
    """Labels as class ids, each checked: with ``names`` a label must be one of them (its id is its position);
    without, an integer (or a string of digits) in [0, num_labels). ``where(i)`` names the file and line of the
    i-th value for the one-line ``DataError``."""
    ids = {name: i for i, name in enumerate(names)} if names is not None else None
    out = np.empty(len(values), dtype=np.int64)
    for i, value in enumerate(values):
        label = ids.get(value) if ids is not None else _class_id(value)
        if label is None or not 0 <= label < num_labels:
            expected = f"one of {list(names)}" if names is not None else f"a class id in 0..{num_labels - 1}"
            raise DataError(f"{where(i)}: label {value!r} is not {expected}; fix the label")
        out[i] = label
    return out


def _class_id(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None
