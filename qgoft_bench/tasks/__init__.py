"""Tasks: one registry by ``task.family`` (glue, superglue, vtab, squad, mmlu, instruct); ``build_task`` makes the
family's ``Task``.

See ``tasks.base`` for the interface and the order a run calls it in.
"""

from omegaconf import DictConfig

from qgoft_bench.tasks.base import (
    TASKS,
    Batch,
    Batching,
    Metric,
    Predict,
    Task,
    best_epoch,
    fingerprint,
    register_task_family,
)


def build_task(task: DictConfig, data: DictConfig) -> Task:
    """The ``Task`` of ``task.family`` for the task config ``task`` and the data locations ``data``."""
    return TASKS.get(task.family)(task, data)


__all__ = ["TASKS", "Batch", "Batching", "Metric", "Predict", "Task", "best_epoch", "build_task", "fingerprint",
           "register_task_family"]

from qgoft_bench.tasks import glue, instruct, mmlu, squad, superglue, vtab1k  # noqa: F401  (registers the task families)
