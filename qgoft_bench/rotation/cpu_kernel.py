"""The CPU kernel for ``x @ R`` (``givens_cpu.cpp``): one read and one write of the activations per direction.

Why a C++ kernel: the PyTorch formulation (``operator.GivensRotate``) needs a copy of the input, a batched matmul, a
strided gather and write-back of the group heads and, in the backward, all of that again plus the block reduction:
about ten activation-sized passes per step, each its own parallel region, and its gradient comes out column-major,
which the layer below pays for with a transposing copy. On a shared machine every region waits for its slowest
thread. The kernel runs the whole tree on tiles of 16 token rows held in cache, in one parallel region per call whose
threads take chunks of tiles from a counter (a descheduled thread holds up one chunk, not a fixed half), and writes
row-major results. Measured in ``benchmarks/rotation.py --contention`` (results/perf/rotation_contention.md).

Built with torch's own ``cpp_extension`` (a C++ compiler and ninja are needed): ``make install`` builds it once into
torch's extension cache (``TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``); a process that finds it
missing builds it on first use (about a minute), and where it cannot be built (no compiler) the PyTorch path runs,
with one warning. ``QGOFT_BENCH_CPU_ROTATION=pytorch`` forces the PyTorch path (benchmarks compare the two);
``backend()`` says which path CPU tensors take, and every run record carries it (``provenance``).
"""

import hashlib
import logging
import os
import platform
from functools import cache
from pathlib import Path
from types import ModuleType

import torch
from torch.autograd.function import once_differentiable

log = logging.getLogger(__name__)
SOURCE = Path(__file__).with_name("givens_cpu.cpp")
ENV = "QGOFT_BENCH_CPU_ROTATION"  # "kernel" (default) or "pytorch"


# -fopenmp: ATen's parallel_for is an OpenMP region compiled into the kernel (without the flag it runs on one thread);
# the kernel's libgomp.so.1 resolves to the one torch has loaded, so torch.set_num_threads governs it.
# -march=native: the build is for the machine it runs on (make install, or the first use).
FLAGS = {"extra_cflags": ["-O3", "-march=native", "-fopenmp"], "extra_ldflags": ["-fopenmp"]}
_chosen: str | None = None


def _isa_tag() -> str:
    """A short hash of this CPU's instruction-set flags: part of the build's name, so that nodes of a cluster that
    share a home folder (and torch's extension cache) but not an instruction set never load each other's
    ``-march=native`` build (which would die of an illegal instruction)."""
    flags = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            flags += next((line for line in f if line.startswith("flags")), "")
    except OSError:
        pass
    return hashlib.sha256(flags.encode()).hexdigest()[:8]


@cache
def load(verbose: bool = False) -> ModuleType | None:
    """The compiled kernel (built now if it is not in the cache), or None where it cannot be built."""
    quiet = logging.getLogger("torch.utils.cpp_extension")  # its import warns that there is no CUDA: irrelevant here
    level, quiet.level = quiet.level, logging.ERROR
    try:
        from torch.utils import cpp_extension

        name = f"qgoft_bench_givens_cpu_{_isa_tag()}"
        return cpp_extension.load(name=name, sources=[str(SOURCE)], verbose=verbose, **FLAGS)
    except Exception as err:  # noqa: BLE001 - no compiler, no ninja, a failed build: all mean the PyTorch path
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        log.warning("the C++ rotation kernel could not be built (%s; `make install` "
                    "shows the compiler's output): CPU rotations use the slower PyTorch path", first)
        return None
    finally:
        quiet.setLevel(level)


def backend() -> str:
    """Which path ``givens_rotate`` takes for CPU tensors: ``kernel`` (C++) or ``pytorch``.

    Raises ValueError for a ``QGOFT_BENCH_CPU_ROTATION`` other than ``kernel`` or ``pytorch``.
    """
    global _chosen
    choice = os.environ.get(ENV, "kernel")
    if choice not in ("kernel", "pytorch"):
        raise ValueError(f"{ENV}={choice!r}: expected 'kernel' or 'pytorch'")
    _chosen = "kernel" if choice == "kernel" and load() is not None else "pytorch"
    return _chosen


def chosen() -> str | None:
    """The path CPU rotations last took in this process (``kernel`` or ``pytorch``), None if none ran on the CPU."""
    return _chosen


class GivensRotateCPU(torch.autograd.Function):
    """y = x @ R for contiguous float32/float64 (N, d) x and (d - 1, 2, 2) blocks of the same dtype; saves x."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, blocks)
        return load().forward(x, blocks)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        x, blocks = ctx.saved_tensors
        need_x, need_blocks = ctx.needs_input_grad
        grad_x, partial = load().backward(x, blocks, grad_y.contiguous(), need_x)
        # per-chunk partial sums, added in chunk order: the same result at any thread count
        return (grad_x if need_x else None), (partial.sum(0) if need_blocks else None)


def main() -> None:
    """``make install``: build the kernel now, showing the compiler's output, and say which path CPUs will take."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    built = load(verbose=True)
    print(f"C++ rotation kernel: {'built, ' + built.__file__ if built else 'NOT built: the PyTorch path runs'}")
