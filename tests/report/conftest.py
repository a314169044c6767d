"""Generated result records for the report tests: written with ``records.write_record`` into ``tmp_path``."""

from collections.abc import Callable
from pathlib import Path

import pytest

from qgoft_bench.records import SCHEMA_VERSION, record_path, write_record


def make_record(
    task: str,
    label: str,
    seed: int,
    best: dict[str, float],
    model: str = "minilm_l6",
    status: str = "completed",
    adapter_params: int = 82_872,
    last: dict[str, float] | None = None,
    epochs: list[dict] | None = None,
    protocol: str | None = None,
    **fields,
) -> dict:
    """A schema-1 record with the fields the tables read; ``last`` defaults to ``best`` minus 0.05, ``epochs`` (the
    per-epoch log) to none; ``protocol`` is the task's (none: a record from before the field); ``fields`` replace or add top-level fields (``run_id``, ``config``, ``train_time_s``)."""
    record = {
        "schema_version": SCHEMA_VERSION,
        "run_id": f"r{seed:03d}",
        "status": status,
        "error": None if status == "completed" else "RuntimeError: boom",
        "task": {"name": task, "family": task.split("/")[0], "metric": next(iter(best)),
                 **({"protocol": protocol} if protocol else {})},
        "model": model,
        "method": {"name": label.split("_")[0], "label": label},
        "seed": seed,
        "params": {
            "adapter_params": adapter_params,
            "head_params": 1_538,
            "trainable_params": adapter_params + 1_538,
            "total_params": 22_713_216,
        },
        "metrics": {
            "epochs": epochs or [],
            "best": {"epoch": 2, **best},
            "last": {"epoch": 3, **(last if last is not None else {k: v - 0.05 for k, v in best.items()})},
        },
        "wall_time_s": 1.0,
        "peak_memory_mb": 10.0,
    }
    record.update(fields)
    return record


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., Path]:
    """``write(task, label, seed, best, **kw)`` writes one record under ``tmp_path / "results"``."""

    def _write(task: str, label: str, seed: int, best: dict[str, float], **kwargs) -> Path:
        record = make_record(task, label, seed, best, **kwargs)
        path = record_path(tmp_path / "results", task, record["model"], label, seed, record["run_id"])
        write_record(path, record)
        return path

    return _write
