"""The task interface: a task owns its data, the head it trains, its training loss and its evaluation.

A run (``qgoft_bench.train.run``) drives a task in this order, and the training loop knows nothing else about it:

    task = build_task(cfg.task, cfg.data)            # the family's class from the registry; config only
    task.read()                                      # read and check every split, before any model is built
    bundle = build_model(cfg.model, task.head, task.num_labels)
    task.encode(bundle.processor, batching)          # tokenise (text) or set the image transform (vision)
    for batch in task.train_batches(seed):           # {"inputs": {...}, "targets": {...}}, order from seed only
        outputs = model(**batch["inputs"])
        loss = task.loss(outputs, batch["targets"])  # the mean over task.count(batch["targets"]) terms
    task.evaluate(predict) -> {metric: value}        # predict(inputs) -> the model's outputs, no grad
    task.artifacts() -> {suffix: JSON-able}          # optional: what that evaluation produced besides metrics
                                                     # (SQuAD's answers); the run writes the best evaluation's
                                                     # beside the record, <record stem>.<suffix>.json
    task.metrics, task.headline                      # every metric with its direction; the best epoch follows
                                                     # the headline in its direction, among finite values

A batch is two dicts of tensors: ``inputs`` go to the model as keyword arguments, ``targets`` only to the task's
loss. Evaluation is the task's whole procedure (argmax over classes, scoring choices, decoding spans, ...), so a
new kind of task is one family module and its configs, never a change to the loop.
"""

import hashlib
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset, Sampler

from qgoft_bench.files import update_with_file
from qgoft_bench.registry import Registry

Batch = dict[str, dict[str, torch.Tensor]]  # {"inputs": model keyword arguments, "targets": what the loss reads}
Predict = Callable[[dict[str, torch.Tensor]], Any]  # inputs -> model outputs (no grad, the run's device/precision)


@dataclass(frozen=True)
class Metric:
    """A metric a task reports: its name in records and whether higher values are better."""

    name: str
    higher_is_better: bool = True


@dataclass(frozen=True)
class Batching:
    """How a task batches its examples; filled by the run from ``cfg.trainer``."""

    batch_size: int
    eval_batch_size: int
    max_seq_len: int  # text tasks: inputs are truncated to this many tokens (already clamped to the model's limit)
    num_workers: int = 0


def make_loader(dataset: Dataset, batch_size: int, collate: Callable | None, num_workers: int,
                shuffle_seed: int | None = None, batch_sampler: Sampler[list[int]] | None = None) -> DataLoader:
    """The one DataLoader factory of every task family.

    ``shuffle_seed`` set: a shuffled order drawn from a generator of its own, so the order depends on that seed
    only (not on how much of the global RNG a method's initialisation consumed). None: file order (evaluation).
    ``batch_sampler`` (which then decides the batches and their order, from a generator of its own): batches of
    similar lengths (``tasks.instruct.LengthGroupedBatches``).
    """
    if batch_sampler is not None:
        return DataLoader(dataset, batch_sampler=batch_sampler, collate_fn=collate, num_workers=num_workers,
                          persistent_workers=num_workers > 0, pin_memory=torch.cuda.is_available())
    generator = None if shuffle_seed is None else torch.Generator().manual_seed(int(shuffle_seed))
    return DataLoader(dataset, batch_size=batch_size, shuffle=generator is not None, generator=generator,
                      collate_fn=collate, num_workers=num_workers, persistent_workers=num_workers > 0,
                      pin_memory=torch.cuda.is_available())


class Task(ABC):
    """One task, configured from its Hydra group (``cfg.task``) and the data locations (``cfg.data``).

    Subclasses set ``head`` (the model head the task trains: ``seq_cls``, ``multiple_choice``, ``span_cls``, ``qa``
    or ``image_cls``), ``num_labels``, ``metrics`` and ``headline`` (and ``data_dir_key``, ``from_hub``), and
    implement the abstract methods.
    """

    head: str
    num_labels: int
    metrics: tuple[Metric, ...]
    headline: str
    data_dir_key: str = ""  # the ``data.<key>`` folder the family reads (checked before any job), if any
    from_hub: bool = True  # without that folder, the family reads the Hugging Face hub
    has_train_split: bool = True  # False: an evaluation only (MMLU), run with eval_only=true
    data_is_file: bool = False  # data.<key> names a file (an instruction data set), not a folder
    # what the scores are measured on, kept in the record's task.protocol: "official" (the task's official splits),
    # "fu2023" (Fu et al.'s 90/10 from their files; drawn here: "fu2023_draw, split_seed 0") or a family's own
    # ("dev_articles"); the paper tables read only official and fu2023
    # records and show others as "<task> (<protocol>)"
    protocol: str = "official"

    def __init__(self, cfg: DictConfig, data: DictConfig) -> None:
        self.cfg = cfg
        self.data = data
        self.name: str = cfg.name
        self.sources: list[Path | str] = []  # what read() read: files, or "hub:<data set>" names

    @property
    def higher_is_better(self) -> bool:
        """The direction of the headline metric."""
        return next(m.higher_is_better for m in self.metrics if m.name == self.headline)

    @abstractmethod
    def read(self) -> None:
        """Read and check every split the run needs, listing what was read in ``sources``; raise ``DataError``
        naming the file (and line) at fault."""

    def check_batching(self, batching: Batching) -> None:
        """Refuse (``ConfigError``, one line) settings of the task that cannot work with the trainer's batching;
        called before any job runs, with ``max_seq_len`` not yet clamped to the model. None by default."""

    @abstractmethod
    def encode(self, processor: Any, batching: Batching) -> None:
        """Prepare batches with the model's processor (a tokenizer, an image processor); after ``read``."""

    @abstractmethod
    def train_batches(self, shuffle_seed: int) -> DataLoader:
        """A loader over the training examples in an order drawn from ``shuffle_seed`` alone."""

    @abstractmethod
    def loss(self, outputs: Any, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        """The training loss of one batch: a float32 scalar, the mean over ``count(targets)`` terms."""

    def count(self, targets: dict[str, torch.Tensor]) -> int:
        """How many terms ``loss`` averages over (examples; a token-level loss would count tokens): gradient
        accumulation weights each micro-batch by it."""
        return len(next(iter(targets.values())))

    @abstractmethod
    def evaluate(self, predict: Predict) -> dict[str, float]:
        """Every metric of ``metrics`` on the evaluation splits (fractions; NaN where a metric is undefined)."""

    def encoding_report(self) -> dict[str, Any]:
        """What ``encode`` did to the examples that the record should say (the run stores it as
        ``data.encoding``): e.g. how many were truncated to ``max_seq_len`` or dropped. None by default."""
        return {}

    def artifacts(self) -> dict[str, Any]:
        """What the last ``evaluate`` produced besides its metrics, as ``{suffix: JSON-able value}`` (none by
        default; SQuAD: ``{"predictions": {question id: answer}}``). The loop keeps it per evaluation; the run
        writes the best evaluation's beside the record as ``<record stem>.<suffix>.json``."""
        return {}


def fingerprint(sources: list[Path | str]) -> dict[str, str | int]:
    """The data identity a record keeps: sha256 over the contents of every file in ``sources`` (and the text of every
    other source, such as a hub name), in order; ``{"fingerprint": first 16 hex digits, "files": count}``."""
    digest = hashlib.sha256()
    files = 0
    for source in sources:
        digest.update(str(source).encode() + b"\0")
        if isinstance(source, Path):
            files += 1
            with open(source, "rb") as f:
                update_with_file(digest, f)
    return {"fingerprint": digest.hexdigest()[:16], "files": files}


def best_epoch(epochs: list[dict], metric: str, higher_is_better: bool) -> dict:
    """The epoch whose ``eval[metric]`` is best in its direction among finite values; the last epoch when none is
    finite (NaN is a legal value: Pearson of a constant prediction)."""
    finite = [e for e in epochs if isinstance(v := e["eval"].get(metric), int | float) and math.isfinite(v)]
    if not finite:
        return epochs[-1]
    pick = max if higher_is_better else min
    return pick(finite, key=lambda e: e["eval"][metric])


TASKS: Registry = Registry("task family")
register_task_family = TASKS.register
