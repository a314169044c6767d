"""What a result record says about where it came from: package versions, git revision, hardware, memory."""

import hashlib
import platform
import resource
import subprocess
from importlib import metadata
from pathlib import Path

import torch

from qgoft_bench.methods.givens.layer import GivensLayer
from qgoft_bench.rotation import cpu_kernel

PACKAGES = ("qgoft-bench", "torch", "transformers", "peft", "timm", "datasets", "hydra-core", "numpy")


def versions() -> dict[str, str | None]:
    """The installed version of Python and of each of ``PACKAGES`` (None for one not installed)."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


CHECKOUT = Path(__file__).resolve().parents[2]  # the repository the package runs from, when it is a checkout


def git_revision(repo: Path = CHECKOUT) -> dict[str, str | bool | None]:
    """The revision of the checkout the package runs from, whether it had uncommitted changes to tracked files, and
    (when it had) ``diff_sha256``: sha256 of ``git diff HEAD``, so that two records from the same dirty tree can be
    told from records of different edits. ``repo``: the package's checkout. Every value is None outside a git
    checkout."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10,
                                 check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    revision = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if revision else None
    dirty = bool(status) if status is not None else None
    diff = git("diff", "HEAD", "--no-color", "--no-ext-diff") if dirty else None
    return {"revision": revision, "dirty": dirty,
            "diff_sha256": hashlib.sha256(diff.encode()).hexdigest() if diff is not None else None}


def cpu_rotation(model: torch.nn.Module, device: torch.device) -> str | None:
    """The path the model's Givens rotations take on this CPU (``kernel`` or ``pytorch``), None when it has none or
    runs elsewhere. A run asks before its timer starts: a kernel not yet built is built now, not in training time."""
    if device.type != "cpu" or not any(isinstance(m, GivensLayer) for m in model.modules()):
        return None
    return cpu_kernel.backend()


def cpu_name() -> str | None:
    """The CPU's model name (Linux ``/proc/cpuinfo``; elsewhere ``platform.processor()``, None when empty)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or None


def hardware(device: torch.device, rotation: str | None = None) -> dict[str, str | int | None]:
    """What ran the run: device type, CPU model, torch's CPU threads, platform; the GPU's name on CUDA, and which
    path (C++ kernel or PyTorch) the Givens rotations took on the CPU (``rotation``, from ``cpu_rotation``)."""
    info: dict[str, str | int | None] = {"device": device.type, "cpu": cpu_name(),
                                         "cpu_threads": torch.get_num_threads(), "platform": platform.platform()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    if rotation is not None:  # the run's Givens rotations ran on the CPU: which path (C++ kernel or PyTorch)
        info["cpu_rotation"] = rotation
    return info


def weight_dtypes(model: torch.nn.Module) -> dict[str, list[str]]:
    """The dtypes of the model's parameters, frozen and trainable apart (e.g. ``{"frozen": ["bfloat16"],
    "trainable": ["float32"]}`` for an adapter on a ``model.dtype=bfloat16`` backbone); sorted dtype names."""
    found: dict[str, set[str]] = {"frozen": set(), "trainable": set()}
    for param in model.parameters():
        found["trainable" if param.requires_grad else "frozen"].add(str(param.dtype).removeprefix("torch."))
    return {kind: sorted(names) for kind, names in found.items()}


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak: CUDA's allocator statistics, or the process's peak RSS (Linux ``clear_refs``), so that
    every run of a sweep in one process reports its own peak, not the largest so far."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass  # not Linux: peak_memory_mb then reports the process-lifetime peak


def peak_memory_mb(device: torch.device) -> float:
    """Peak CUDA memory allocated on GPU; on CPU the peak resident set size since ``reset_peak_memory``. In MiB
    (2^20 bytes), as torch and ``/proc`` count; the record's key keeps its historical name ``peak_memory_mb``."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024  # kB
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
