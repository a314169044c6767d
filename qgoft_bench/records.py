"""Result records: one immutable JSON file per run, written atomically; tables are a pure function of them.

A record (``schema_version`` 1) holds::

    run_id          sha1 of the run's identity (the resolved config minus paths and switches that do not change
                    the result, see ``IGNORED_KEYS``), first 12 hex digits
    status          "completed" | "failed"
    error           one-line error message when failed, else null
    task            {"name": "glue/rte", "family": "glue", "metric": "accuracy"}   (metric: the headline metric)
    model           "minilm_l6"
    method          {"name": "lora", "label": "lora_r8"}   (label: the preset tables group by, e.g. lora_r2, oft_b8)
    seed            int
    params          {"adapter_params", "head_params", "trainable_params", "total_params", ...extra labelled counts}
    metrics         {"epochs": [{"epoch": 1, "step": 78, "train_loss": 0.61, "eval": {"accuracy": 0.71, ...}}, ...],
                     "best": {"epoch": 3, "accuracy": 0.74, ...},   (epoch with the best headline metric)
                     "last": {"epoch": 5, "accuracy": 0.73, ...}}
                    metric values are fractions in [0, 1] (correlations in [-1, 1]); tables print them as percent
    wall_time_s     whole run; train_time_s: the training loop only
    peak_memory_mb  peak resident memory of the process on CPU, peak allocated CUDA memory on GPU (on CPU it
                    includes heap that glibc kept from freed tensors, of earlier runs of a sweep too: compare
                    methods with benchmarks/peak_rss.sh)
    config          the resolved Hydra config
    versions, git, hardware, created_at
"""

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1

# Keys that do not change what a run computes: paths, output switches, trackers.
IGNORED_KEYS = ("results_dir", "overwrite", "dry_run", "tracker", "data", "trainer.progress", "hydra")


def _drop(config: dict[str, Any], dotted: str) -> None:
    head, _, rest = dotted.partition(".")
    if head not in config:
        return
    if rest and isinstance(config[head], dict):
        _drop(config[head], rest)
    elif not rest:
        del config[head]


def run_id(config: dict[str, Any]) -> str:
    """Stable id of a run: the hash of its config without ``IGNORED_KEYS``."""
    identity = json.loads(json.dumps(config))
    for key in IGNORED_KEYS:
        _drop(identity, key)
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def record_path(results_dir: str | Path, task: str, model: str, label: str, seed: int, rid: str) -> Path:
    """``results_dir/<task>/<model>/<method label>/seed<seed>-<run_id>.json`` (task names keep their group)."""
    return Path(results_dir) / task / model / label / f"seed{seed}-{rid}.json"


def write_record(path: Path, record: dict[str, Any]) -> None:
    """Write ``record`` as JSON atomically: a temp file in the same folder, fsync, rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(record, f, indent=1, sort_keys=False, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_record(path: Path) -> dict[str, Any]:
    with open(path) as f:
        return json.load(f)


def is_done(path: Path) -> bool:
    """A run is done when its record exists and completed; failed runs are tried again."""
    if not path.exists():
        return False
    try:
        return read_record(path).get("status") == "completed"
    except (OSError, json.JSONDecodeError):
        return False


def iter_records(results_dir: str | Path) -> Iterator[dict[str, Any]]:
    """Every readable record below ``results_dir`` (recursively), skipping temp files and non-records."""
    for path in sorted(Path(results_dir).rglob("*.json")):
        if path.name.startswith("."):
            continue
        try:
            record = read_record(path)
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(record, dict) and record.get("schema_version") == SCHEMA_VERSION:
            record["_path"] = str(path)
            yield record
