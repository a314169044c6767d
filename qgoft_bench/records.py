"""Result records: one JSON file per run, written atomically and never replaced by a worse one; tables are a pure
function of them. The train layer writes records, the report layer reads them; this module is all they share.

A record (``schema_version`` 1) holds::

    run_id          sha1 of the run's identity (the resolved config minus paths and switches that do not change
                    the result, see ``IGNORED_KEYS``), first 12 hex digits
    status          "completed" | "diverged" (the training loss became NaN/inf) | "failed" | "interrupted"
    error           one-line error message unless completed, else null
    task            {"name": "glue/rte", "family": "glue", "metric": "accuracy", "higher_is_better": true}
                    (metric: the headline metric, which picks the best epoch)
    model           "minilm_l6"
    method          {"name": "lora", "label": "lora_r8"}   (label: the preset tables group by, e.g. lora_r2, oft_b8)
    seed            int
    data            {"fingerprint": sha256 of the data files the run read (or the hub source), "files": n}
    params          the method's counts: {"adapter_params", "head_params", "trainable_params", "total_params", ...}
    batching        {"batch_size", "eval_batch_size", "max_seq_len" (as used, after clamping), "num_workers"}
    metrics         {"epochs": [{"epoch": 1, "step": 78, "train_loss": 0.61, "eval": {"accuracy": 0.71, ...}}, ...],
                     "best": {"epoch": 3, "step": 234, "accuracy": 0.74, ...},   (best headline epoch)
                     "last": {"epoch": 5, "step": 390, "accuracy": 0.73, ...}}
                    metric values are fractions in [0, 1] (correlations in [-1, 1]); an undefined value is null.
                    A run that diverged, failed or was interrupted in training has {"epochs": [...]} alone: the
                    evaluations it made before it stopped (none: no metrics)
    wall_time_s     this attempt, start to record; train_time_s: the training loop only, summed over the attempts
                    of a resumed run (so it can exceed wall_time_s); eval_only runs: eval_time_s instead
    resumed_from    a run resumed from its checkpoint: the update each later attempt started from
    earlier_git     with resumed_from: the ``git`` of each attempt before the last, in order (``git`` is the last
                    attempt's; null: a checkpoint written before checkpoints kept it)
    adapter         eval_only=true adapter=FILE: {"path" (resolved), "sha256", "run_id" (the run that wrote it)} of the
                    saved adapter that was scored; the run id counts the file by its sha256, not its path
    saved_adapter   save_adapter=true: {"file" (beside the record), "step" (the best evaluation's update: the file
                    holds its weights, not the last update's), "sha256"}
    vicuna          instruction tasks with eval.vicuna_answers=true: {"questions", "file" (<record stem>.vicuna.jsonl),
                    "time_s", "time_per_question_s", "max_new_tokens", "cut" (answers that reached it)}
    distributed     a run under torchrun: {"world_size": N, "backend": "nccl" | "gloo"} (rank 0 writes the record; the
                    number of processes is not in the run id: trainer.batch_size is the global batch); absent in one
                    process
    peak_memory_mb  peak resident memory of the process on CPU, peak allocated CUDA memory on GPU, in MiB (on CPU it
                    includes heap that glibc kept from freed tensors, of earlier runs of a sweep too: compare
                    methods with benchmarks/peak_rss.sh)
    config          the resolved Hydra config
    versions, git, hardware, created_at

Files are strict JSON (NaN and infinities are written as null). ``store_record`` keeps the promise that a record is
never replaced by a worse one: a completed record is replaced only by a newer completed one, a diverged one only by
a completed or diverged one; an attempt that may not replace the run's record is kept beside it, in
``attempts/<record stem>.<time>.<status>.json``, which tables do not read as results.

Workers that share a results folder (two sweeps, a cluster's array jobs) claim a run before training it: ``claim``
writes ``.<record stem>.claim`` beside the record (host, pid, start) under the run's lock and keeps its mtime fresh
while the run trains; another worker skips a claimed run. A claim is stale, and taken over, when its process is gone
(same host) or it has not been refreshed for ``CLAIM_STALE_S`` seconds (any host: a killed or preempted node), or
it was written by this very SLURM job before SLURM requeued it (same ``SLURM_JOB_ID``, lower ``SLURM_RESTART_COUNT``).
"""

import fcntl
import hashlib
import json
import math
import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from qgoft_bench.files import sha256_file

SCHEMA_VERSION = 1
STATUSES = ("completed", "diverged", "failed", "interrupted")
FINAL = ("completed", "diverged")  # outcomes of a config, which a re-run of the sweep skips
RANK = {"completed": 2, "diverged": 1, "failed": 0, "interrupted": 0}  # who may replace whom
ATTEMPTS = "attempts"
PROBE_PREFIX = ".write-check."  # check_writable's probe files
PROBE_STALE_S = 3600  # a probe older than this was left by a killed writer

# Keys that do not change what a run computes: paths, output switches, trackers, loader workers, checkpoints.
# ``eval`` holds settings a task reads through its own config (task=mmlu: task.shots: ${eval.mmlu_shots}), so they
# are in the identity as the task's, and only for the tasks that use them.
IGNORED_KEYS = ("results_dir", "overwrite", "dry_run", "save_adapter", "tracker", "data", "trainer.progress",
                "trainer.num_workers", "trainer.checkpoint_every", "hydra", "eval")
# keys added after records existed: left out of the identity while at this default, so earlier records keep their ids
DEFAULT_KEYS = {"eval_only": False, "adapter": None, "model.dtype": None}
_ANY = object()


def _drop(config: dict[str, Any], dotted: str, default: Any = _ANY) -> None:
    """Delete the key ``dotted`` from the nested ``config``, where present (and equal to ``default``, if given)."""
    head, _, rest = dotted.partition(".")
    if head not in config:
        return
    if rest and isinstance(config[head], dict):
        _drop(config[head], rest, default)
    elif not rest and (default is _ANY or config[head] == default):
        del config[head]


def drawn_split(task: Mapping[str, Any], data: Mapping[str, Any]) -> bool:
    """Whether a run follows Fu et al.'s 90/10 protocol without their split files (``task.protocol=fu2023``, no
    ``data.fu2023_dir``): the split is then drawn here (``tasks.protocol``), another experiment than theirs, with run
    ids and a protocol name of its own."""
    return task.get("protocol") == "fu2023" and not data.get("fu2023_dir")


def run_id(config: dict[str, Any]) -> str:
    """Stable id of a run: the hash of its config without ``IGNORED_KEYS``; a saved adapter it scores (``adapter``)
    counts by its contents (sha256), not by the path that names it; Fu et al.'s protocol on a drawn split (no
    ``data.fu2023_dir``) is told apart from the one on their files."""
    identity = json.loads(json.dumps(config))
    for key in IGNORED_KEYS:
        _drop(identity, key)
    for key, default in DEFAULT_KEYS.items():
        _drop(identity, key, default)
    task = identity.get("task")
    if isinstance(task, dict) and drawn_split(task, config.get("data") or {}):
        # data paths are not part of the identity, but whether Fu et al.'s files are read is: without them the 90/10
        # split is drawn here, another experiment, whose record must not take the place of one on their files
        task["split"] = "drawn"
    if isinstance(adapter := identity.get("adapter"), str) and Path(adapter).expanduser().is_file():
        identity["adapter"] = sha256_file(Path(adapter).expanduser())
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def record_path(results_dir: str | Path, task: str, model: str, label: str, seed: int, rid: str) -> Path:
    """``results_dir/<task>/<model>/<method label>/seed<seed>-<run_id>.json`` (task names keep their group)."""
    return Path(results_dir) / task / model / label / f"seed{seed}-{rid}.json"


def record_path_for(config: dict[str, Any]) -> Path:
    """Where the run of a resolved config keeps its record: ``record_path`` with the config's own run id."""
    return record_path(config["results_dir"], config["task"]["name"], config["model"]["name"],
                       config["method"]["label"], config["seed"], run_id(config))


def strict(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (strict JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict(v) for v in value]
    return value


def to_json(record: dict[str, Any]) -> str:
    """The record as strict JSON text, one key per line at the top."""
    return json.dumps(strict(record), indent=1, allow_nan=False, default=str) + "\n"


def write_record(path: Path, record: dict[str, Any]) -> None:
    """Write ``record`` atomically as strict JSON (``write_atomic``)."""
    write_atomic(path, to_json(record))  # serialised before any file is touched: a bad record changes nothing


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` atomically (``atomic_file``)."""
    with atomic_file(path, "w") as f:
        f.write(text)


@contextmanager
def atomic_file(path: Path, mode: str = "w") -> Iterator[IO]:
    """A file to write ``path`` through, atomically: a temp file in the same folder (opened with ``mode``, "w" as
    UTF-8 text or "wb"), fsync, rename over ``path`` when the block ends without error, fsync the folder; on an
    error the temp file is removed and ``path`` is untouched."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # as open() would make it (mkstemp's 0600 hides records from a shared group)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # the rename itself survives a power cut
    finally:
        os.close(folder)


@contextmanager
def run_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on one run's record (a hidden lock file beside it), across processes and machines that
    share the folder with working POSIX locks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.parent / f".{path.stem}.lock", os.O_CREAT | os.O_RDWR, 0o666)  # less the umask: a group shares it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


CLAIM_REFRESH_S = 60.0  # how often a running worker touches its claim
CLAIM_STALE_S = 600.0  # a claim untouched this long belongs to a worker that is gone


def claim_path(path: Path) -> Path:
    """The claim file of the run whose record is ``path``."""
    return path.parent / f".{path.stem}.claim"


def remove_stale_temps(path: Path) -> list[Path]:
    """Remove the temp files (``atomic_file``'s) that a writer killed mid-write (SIGKILL, power cut) left for the run
    whose record is ``path``: of its record, checkpoint, adapter, artifacts, attempts and claim. Only the run's
    claim holder may call it, as nothing else writes these files. Also ``check_writable``'s probes in the record's
    folder older than ``PROBE_STALE_S`` (a probe lives for milliseconds; a younger one may be another worker's, now).
    Returns the files removed."""
    stale = [*path.parent.glob(f".{path.stem}.*.tmp"), *path.parent.glob(f"..{path.stem}.claim.*.tmp"),
             *(path.parent / ATTEMPTS).glob(f".{path.stem}.*.tmp")]
    now = time.time()
    for probe in path.parent.glob(f"{PROBE_PREFIX}*.tmp"):
        with suppress(FileNotFoundError):  # its writer, or another run's cleanup, removed it meanwhile
            if now - probe.stat().st_mtime > PROBE_STALE_S:
                stale.append(probe)
    for file in stale:
        file.unlink(missing_ok=True)
    return stale


def slurm_incarnation() -> list[str | int] | None:
    """``[SLURM_JOB_ID, SLURM_RESTART_COUNT]`` inside a SLURM job (a requeued job keeps its id and counts up), else
    None."""
    job = os.environ.get("SLURM_JOB_ID")
    return [job, int(os.environ.get("SLURM_RESTART_COUNT") or 0)] if job else None


def _stale(claim: Path, holder: dict[str, Any] | None) -> bool:
    if holder is None:  # unreadable: a worker died while writing it, or someone else's file
        return True
    if time.time() - claim.stat().st_mtime > CLAIM_STALE_S:
        return True
    ours, theirs = slurm_incarnation(), holder.get("slurm")
    if ours and isinstance(theirs, list) and theirs[0] == ours[0] and int(theirs[1]) < ours[1]:
        return True  # this job's own claim from before SLURM requeued it (killed on another node, maybe)
    if holder.get("host") == socket.gethostname():
        try:
            os.kill(int(holder["pid"]), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, KeyError, ValueError, TypeError):
            return False
    return False


def live_claim(path: Path) -> dict[str, Any] | None:
    """The claim of a worker that is running ``path``'s run now, or None (no claim, or a stale one)."""
    file = claim_path(path)
    try:
        holder = json.loads(file.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        holder = None
    return None if _stale(file, holder) else holder


@contextmanager
def claim(path: Path) -> Iterator[dict[str, Any] | None]:
    """Claim the run of ``path`` for this process while the block runs. Yields None when the claim is ours, or the
    live holder's claim (``{"host", "pid", "since", "slurm"}``) when another worker has it (the caller skips the run). A stale
    claim is taken over; ours is refreshed every ``CLAIM_REFRESH_S`` seconds and removed at the end."""
    file = claim_path(path)
    mine = {"host": socket.gethostname(), "pid": os.getpid(), "since": datetime.now(UTC).isoformat(timespec="seconds"),
            "slurm": slurm_incarnation()}
    with run_lock(path):
        holder = live_claim(path)
        if holder is None:
            write_record(file, mine)
    if holder is not None:
        yield holder
        return
    stop = threading.Event()

    def refresh() -> None:
        while not stop.wait(CLAIM_REFRESH_S):
            try:
                os.utime(file)
            except OSError:
                return

    keeper = threading.Thread(target=refresh, daemon=True, name="claim-refresh")
    keeper.start()
    try:
        yield None
    finally:
        stop.set()
        keeper.join()
        with run_lock(path):
            try:
                if json.loads(file.read_text()) == mine:  # never another worker's, which took over a stale one
                    file.unlink()
            except (OSError, ValueError):
                pass


def store_record(path: Path, record: dict[str, Any]) -> Path:
    """Write ``record`` as the run's record at ``path``, unless a better one is there (``RANK``: a completed record
    is replaced only by a completed one, a diverged one by a completed or diverged one); then keep it as an attempt
    beside it. Returns the path written. Under ``run_lock``, so two workers on one run cannot interleave."""
    with run_lock(path):
        current = read_status(path)
        if current is None or RANK[record["status"]] >= RANK.get(current, 0):
            write_record(path, record)
            return path
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        attempt = path.parent / ATTEMPTS / f"{path.stem}.{stamp}.{record['status']}.json"
        write_record(attempt, record)
        return attempt


def read_record(path: Path) -> dict[str, Any]:
    """The record at ``path`` (OSError, ``json.JSONDecodeError`` when unreadable)."""
    with open(path) as f:
        return json.load(f)


def read_status(path: Path) -> str | None:
    """The status of the record at ``path``; None when there is none or it cannot be read."""
    try:
        record = read_record(path)
    except (OSError, ValueError):  # ValueError: not JSON, not UTF-8
        return None
    return record.get("status") if isinstance(record, dict) else None


def is_done(path: Path, fingerprint: str | None = None) -> bool:
    """A run is done when its record has a final status (completed or diverged) and, when ``fingerprint`` is given,
    was computed on the same data; failed and interrupted runs are tried again."""
    try:
        record = read_record(path)
    except (OSError, ValueError):
        return False
    if not isinstance(record, dict) or record.get("status") not in FINAL:
        return False
    return fingerprint is None or (record.get("data") or {}).get("fingerprint") == fingerprint


def check_writable(results_dir: str | Path) -> None:
    """Raise ``OSError`` (with the reason) unless a record can be written under ``results_dir``: the folder exists
    or can be made, is a folder, and takes a small file (written, synced and removed)."""
    folder = Path(results_dir)
    folder.mkdir(parents=True, exist_ok=True)
    fd, probe = tempfile.mkstemp(dir=folder, prefix=PROBE_PREFIX, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write("x" * 4096)
            f.flush()
            os.fsync(f.fileno())
    finally:
        Path(probe).unlink(missing_ok=True)


def iter_record_files(results_dir: str | Path) -> Iterator[Path]:
    """Every candidate record file below ``results_dir``: ``*.json``, not hidden, not an attempt, not a file a run
    wrote beside its record (``<record stem>.<suffix>.json`` next to ``<record stem>.json``)."""
    for path in sorted(Path(results_dir).rglob("*.json")):
        beside = "." in path.stem and path.with_name(f"{path.stem.rsplit('.', 1)[0]}.json").exists()
        if not path.name.startswith(".") and not beside and ATTEMPTS not in path.relative_to(results_dir).parts[:-1]:
            yield path


def scan(results_dir: str | Path) -> tuple[list[dict[str, Any]], list[tuple[Path, str]]]:
    """(records, skipped): every record below ``results_dir`` (each with ``_path``), and the files that should have
    been records but cannot be read as ones, with the reason (unreadable, not JSON: truncated, another schema, an
    unknown status). JSON files that are no records at all (benchmark output, predictions) are passed over."""
    found, skipped = [], []
    for path in iter_record_files(results_dir):
        try:
            record = read_record(path)
        except OSError as err:
            skipped.append((path, f"unreadable ({err.strerror})"))
            continue
        except json.JSONDecodeError as err:
            skipped.append((path, f"not JSON (truncated?): {err.msg}, line {err.lineno} column {err.colno}"))
            continue
        except UnicodeDecodeError:
            skipped.append((path, "not UTF-8 text"))
            continue
        if not isinstance(record, dict) or "schema_version" not in record:
            if isinstance(record, dict) and "status" in record:  # a record's field, without the record's version
                skipped.append((path, "has a status but no schema_version: not a record this harness wrote"))
            continue
        if record["schema_version"] != SCHEMA_VERSION:
            skipped.append((path, f"schema_version {record['schema_version']}, this reader knows {SCHEMA_VERSION}"))
        elif record.get("status") not in STATUSES:
            skipped.append((path, f"unknown status {record.get('status')!r}"))
        elif problem := _shape_problem(record):
            skipped.append((path, problem))
        else:
            record["_path"] = str(path)
            found.append(record)
    return found, skipped


def _shape_problem(record: dict[str, Any]) -> str | None:
    """What a record lacks that tables need, or None."""
    if not isinstance(record.get("task"), dict) or not record["task"].get("name"):
        return "no task name"
    if not isinstance(record.get("method"), dict) or not isinstance(record.get("model"), str):
        return "no method or model"
    if isinstance(record.get("seed"), bool) or not isinstance(record.get("seed"), int):
        return f"seed {record.get('seed')!r} is not an integer"
    if record["status"] != "completed":
        return None
    metrics, headline = record.get("metrics"), record["task"].get("metric")
    if not (isinstance(metrics, dict) and isinstance(metrics.get("best"), dict)
            and isinstance(metrics.get("last"), dict)):
        return "completed, but without metrics (best/last)"
    for select in ("best", "last"):
        value = metrics[select].get(headline, "missing")
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            return f"completed, but metrics.{select} has no number for its headline metric {headline!r}"
        for metric, value in metrics[select].items():  # every value a table may read: a number, null (NaN) or a flag
            if value is not None and not isinstance(value, int | float):
                return f"completed, but metrics.{select}.{metric} is {value!r}, not a number"
    return None


def selection_score(record: dict[str, Any]) -> float | None:
    """The score that picked a completed run's best evaluation, ``metrics.best[task.metric]`` (a dev score on the
    official splits, the held-out validation score on Fu et al.'s protocol, never its test score): what a Hydra
    sweeper that optimises (e.g. Optuna's) should see. None for a run that did not complete or has no such number."""
    if record.get("status") != "completed":
        return None
    value = ((record.get("metrics") or {}).get("best") or {}).get((record.get("task") or {}).get("metric"))
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def iter_records(results_dir: str | Path) -> Iterator[dict[str, Any]]:
    """Every record below ``results_dir`` (see ``scan``; what it skips is not reported here)."""
    yield from scan(results_dir)[0]
