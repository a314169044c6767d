"""Where a job of a parallel sweep runs: its share of the CPU cores and, with GPUs, a GPU of its own.

Hydra's launchers (``hydra/launcher=...``):

- ``basic`` (the default) runs one job at a time in the CLI's process: nothing is pinned.
- ``joblib`` runs ``hydra.launcher.n_jobs`` jobs at once in loky worker processes, which it reuses for job after job,
  in any order: a job's number says nothing about which worker runs it. So each worker claims a slot
  0 .. n_jobs - 1 for its lifetime, an exclusive lock on ``<sweep dir>/.slots/<slot>.lock`` that the OS releases
  when the process ends (a crashed worker frees its slot for its replacement), and pins itself by the slot:
  torch threads = cores // n_jobs, and with GPUs ``CUDA_VISIBLE_DEVICES`` = the slot's GPU, set before the process
  first touches CUDA (one GPU per concurrent job; more jobs than GPUs is refused before any job starts).
- ``submitit_slurm`` / ``submitit_local``: every job is a process of its own. SLURM gives it its GPUs
  (``CUDA_VISIBLE_DEVICES``) and ``cpus_per_task`` cores (``SLURM_CPUS_PER_TASK``), which set the threads.
  submitit's local executor gives every job the same first ``gpus_per_node`` GPUs: it is for trying the machinery,
  joblib is the local launcher for several GPUs.

``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` are set with the threads, for libraries and child processes that read
them; torch is told directly (``torch.set_num_threads``), before the job does any torch work.
"""

import fcntl
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from qgoft_bench.errors import ConfigError

log = logging.getLogger(__name__)
JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
SUBMITIT = "hydra_plugins.hydra_submitit_launcher.submitit_launcher."
SLOT_WAIT_S = 60.0  # a worker that replaces a dead one may start before the OS has released the dead one's lock


@dataclass(frozen=True)
class Placement:
    """A job's share: its worker ``slot`` (joblib), torch ``threads`` and ``gpu`` (a CUDA_VISIBLE_DEVICES entry)."""

    slot: int | None
    threads: int | None
    gpu: str | None


_placed: dict[Path, Placement] = {}  # slot folder -> this worker's placement for the sweep (set once, kept)


def cores() -> int:
    """CPU cores this process may run on (its affinity mask: what SLURM or taskset gave it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` entries. Reads the variable, else counts them as
    ``torch.cuda.device_count`` does before CUDA is initialised, through NVML, which leaves the variable free to be
    set after (where NVML fails, torch initialises the driver to count: set CUDA_VISIBLE_DEVICES before launching)."""
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return [d.strip() for d in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if d.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def concurrent_jobs(launcher: DictConfig) -> int | None:
    """How many jobs ``launcher`` (``hydra.launcher``) runs at once on this machine: joblib's ``n_jobs`` as joblib
    counts it (-1: every core), None for launchers that run one job per process or allocation."""
    if launcher.get("_target_") != JOBLIB:
        return None
    from joblib import effective_n_jobs

    return effective_n_jobs(launcher.n_jobs)


def check_gpus(launcher: DictConfig, device: str) -> None:
    """Raise ``ConfigError`` when joblib would run more jobs at once than there are GPUs for a job that uses one."""
    n = concurrent_jobs(launcher)
    if n is None or n == 1 or device == "cpu":
        return
    gpus = visible_gpus()
    if gpus and n > len(gpus):
        raise ConfigError(f"hydra.launcher.n_jobs runs {n} jobs at once but {len(gpus)} GPU(s) are visible: one GPU "
                          f"per job, so set hydra.launcher.n_jobs={len(gpus)} (or trainer.device=cpu)")


def claim_slot(folder: Path, n: int, wait_s: float = SLOT_WAIT_S) -> int:
    """Lock the first free slot 0 .. n - 1 under ``folder`` for the rest of this process's life and return it.
    Raises ``RuntimeError`` when none frees up within ``wait_s`` seconds."""
    folder.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    while True:
        for slot in range(n):
            fd = os.open(folder / f"{slot}.lock", os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return slot  # fd stays open on purpose: closing it would free the slot
        if time.monotonic() >= deadline:
            raise RuntimeError(f"all {n} worker slots under {folder} are held: more workers than n_jobs")
        time.sleep(0.2)


def place_job(hydra_cfg: DictConfig) -> Placement | None:
    """Pin this job to its share (see the module docstring), given the job's Hydra config (``HydraConfig.get()``);
    returns what was set, None under the basic launcher."""
    launcher = hydra_cfg.launcher
    target = str(launcher.get("_target_", ""))
    if target == JOBLIB:
        folder = Path(str(hydra_cfg.sweep.dir)) / ".slots"
        if folder not in _placed:  # the worker's first job of the sweep; later ones keep its slot and GPU
            n = concurrent_jobs(launcher)
            slot = claim_slot(folder, n)
            gpus = visible_gpus()
            if gpus:
                if slot >= len(gpus):
                    raise ConfigError(f"worker slot {slot} has no GPU of its own ({len(gpus)} visible): set "
                                      f"hydra.launcher.n_jobs={len(gpus)}")
                os.environ["CUDA_VISIBLE_DEVICES"] = gpus[slot]
            _placed[folder] = Placement(slot, max(1, cores() // n), gpus[slot] if gpus else None)
        placement = _placed[folder]
    elif target.startswith(SUBMITIT):
        cpus = os.environ.get("SLURM_CPUS_PER_TASK") or launcher.get("cpus_per_task")
        placement = Placement(None, int(cpus) if cpus else None, None)
    else:
        return None
    if placement.threads is not None:
        import torch

        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[name] = str(placement.threads)
        torch.set_num_threads(placement.threads)
    log.info("placement: %s", placement)
    return placement
