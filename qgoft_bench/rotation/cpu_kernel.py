"""The CPU kernel for ``x @ R`` (``givens_cpu.cpp``): one read and one write of the activations per direction.

Why a C++ kernel: the PyTorch formulation (``operator.GivensRotate``) needs a copy of the input, a batched matmul, a
strided gather and write-back of the group heads and, in the backward, all of that again plus the block reduction:
about ten activation-sized passes per step, each its own parallel region, and its gradient comes out column-major,
which the layer below pays for with a transposing copy. On a shared machine every region waits for its slowest
thread. The kernel runs the whole tree on tiles of 8 token rows held in cache, in one parallel region per call whose
threads take chunks of tiles from a counter (a descheduled thread holds up one chunk, not a fixed half), and writes
row-major results. Measured in ``benchmarks/rotation.py --contention`` (results/perf/rotation_contention.md).

Built with torch's own ``cpp_extension`` (a C++ compiler and ninja are needed): ``make install`` builds it once into
torch's extension cache (``TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``); a process that finds it
missing builds it on first use (about a minute), and where it cannot be built (no compiler) the PyTorch path runs,
with one warning. ``QGOFT_BENCH_CPU_ROTATION=pytorch`` forces the PyTorch path (benchmarks compare the two);
``backend()`` says which path CPU tensors take; a run decides (and builds) before its timer starts and its record
carries the answer (``provenance.cpu_rotation``).
"""

import hashlib
import logging
import os
import platform
import shutil
from functools import cache
from pathlib import Path
from types import ModuleType

import torch

from qgoft_bench.errors import ConfigError

log = logging.getLogger(__name__)
SOURCE = Path(__file__).with_name("givens_cpu.cpp")
ENV = "QGOFT_BENCH_CPU_ROTATION"  # "kernel" (default) or "pytorch"


# -fopenmp: ATen's parallel_for is an OpenMP region compiled into the kernel (without the flag it runs on one thread);
# the kernel's libgomp.so.1 resolves to the one torch has loaded, so torch.set_num_threads governs it.
# -march=native: the build is for the machine it runs on (make install, or the first use).
FLAGS = {"extra_cflags": ["-O3", "-march=native", "-fopenmp"], "extra_ldflags": ["-fopenmp"]}


def _build_tag() -> str:
    """A short hash of this CPU's instruction-set flags, of the kernel's source file (path and bytes) and of the torch
    it links against: part of the build's name, so that nodes of a cluster that share a home folder (and torch's
    extension cache) but not an instruction set never load each other's ``-march=native`` build (which would die of
    an illegal instruction), a venv never loads a build made against another torch, and two checkouts keep a build
    each. One build name for two checkouts, even of the same version, means a rebuild on every alternation:
    cpp_extension's ninja file names the source by its absolute path, so each checkout's first load rebuilds over the
    other's (a minute or two inside whatever was timing itself)."""
    flags = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            flags += next((line for line in f if line.startswith("flags")), "")
    except OSError:
        pass
    linked = f"{SOURCE.resolve()}|{torch.__version__}|{Path(torch.__file__).parent}"
    return hashlib.sha256(flags.encode() + linked.encode() + SOURCE.read_bytes()).hexdigest()[:8]


def _why(err: Exception) -> str:
    """The line of a failed build that says what went wrong (ninja's first line is only the compile command)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for line in lines:
        if "error" in line.lower() or "not found" in line or "required" in line:
            return line[:300]
    return lines[0][:300] if lines else type(err).__name__


@cache
def load(verbose: bool = False) -> ModuleType | None:
    """The compiled kernel (built now if it is not in torch's extension cache), or None where it cannot be built."""
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        log.warning("no C++ compiler (%s) found: CPU rotations use the slower PyTorch path (install g++ and run "
                    "`make install` to build the kernel)", compiler)
        return None
    quiet = logging.getLogger("torch.utils.cpp_extension")  # its import warns that there is no CUDA: irrelevant here
    level, quiet.level = quiet.level, logging.ERROR
    path = os.environ.get("PATH", "")
    try:
        import ninja  # the pip ninja (a dependency): first on PATH, whether or not the venv is activated, so the
        from torch.utils import (
            cpp_extension,  # same ninja always reads the build's log (two versions rebuild)
        )

        os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR, path])
        name = f"qgoft_bench_givens_cpu_{_build_tag()}"
        built = Path(cpp_extension._get_build_directory(name, verbose=False)) / f"{name}.so"
        if not built.exists():
            log.info("building the C++ rotation kernel (once per machine, 1-2 minutes)")
        return cpp_extension.load(name=name, sources=[str(SOURCE)], verbose=verbose, **FLAGS)
    except Exception as err:  # noqa: BLE001 - a failed build means the PyTorch path, said once
        log.warning("the C++ rotation kernel could not be built (%s): CPU rotations use the slower PyTorch path; "
                    "`make install` writes the whole build log to .venv/kernel-build.log", _why(err))
        return None
    finally:
        os.environ["PATH"] = path
        quiet.setLevel(level)


def requested() -> str:
    """``QGOFT_BENCH_CPU_ROTATION``: ``kernel`` (the default) or ``pytorch``; ConfigError for anything else."""
    choice = os.environ.get(ENV, "kernel")
    if choice not in ("kernel", "pytorch"):
        raise ConfigError(f"{ENV}={choice!r}: expected kernel (the default) or pytorch")
    return choice


@torch.compiler.assume_constant_result  # torch.compile asks once, when it traces, instead of breaking the graph
def backend() -> str:
    """Which path ``givens_rotate`` takes for CPU tensors: ``kernel`` (C++) or ``pytorch``; builds the kernel if it
    is requested and not built yet. Raises ConfigError for a bad ``QGOFT_BENCH_CPU_ROTATION``."""
    return "kernel" if requested() == "kernel" and load() is not None else "pytorch"


# The kernel as two torch.library custom ops with a registered autograd formula and fake (shape-only) versions, so
# torch.compile traces through a rotation without a graph break (a plain autograd.Function around a pybind call
# breaks the graph). Both take the (N, d) rows as given and compute in ``dtype``: a bf16 input is saved as bf16.
@torch.library.custom_op("qgoft_bench::givens_rotate_cpu", mutates_args=(), device_types="cpu")
def rotate(x: torch.Tensor, blocks: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """y = x @ R for x (N, d) of any float dtype and blocks (d - 1, 2, 2), computed in ``dtype`` (float32 or
    float64); y has x's dtype."""
    return load().forward(x.to(dtype).contiguous(), blocks.to(dtype).contiguous()).to(x.dtype)


@rotate.register_fake
def _(x: torch.Tensor, blocks: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return torch.empty_like(x)


@torch.library.custom_op("qgoft_bench::givens_rotate_cpu_backward", mutates_args=(), device_types="cpu")
def rotate_backward(x: torch.Tensor, blocks: torch.Tensor, grad_y: torch.Tensor, dtype: torch.dtype,
                    need_x: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad_x (N, d) in x's dtype, or an empty tensor without ``need_x``; grad_blocks (d - 1, 2, 2) in the blocks'
    dtype) of ``rotate``."""
    grad_x, partial = load().backward(x.to(dtype).contiguous(), blocks.to(dtype).contiguous(),
                                      grad_y.to(dtype).contiguous(), need_x)
    # per-chunk partial sums, added in chunk order: the same result at any thread count
    return grad_x.to(x.dtype), partial.sum(0).to(blocks.dtype)


@rotate_backward.register_fake
def _(x: torch.Tensor, blocks: torch.Tensor, grad_y: torch.Tensor, dtype: torch.dtype,
      need_x: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.empty_like(x) if need_x else x.new_empty(0)), torch.empty_like(blocks)


def _save(ctx, inputs: tuple, output: torch.Tensor) -> None:
    x, blocks, ctx.dtype = inputs
    ctx.save_for_backward(x, blocks)


def _grad(ctx, grad_y: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
    x, blocks = ctx.saved_tensors
    need_x, need_blocks, _ = ctx.needs_input_grad
    grad_x, grad_blocks = rotate_backward(x, blocks, grad_y, ctx.dtype, need_x)
    return (grad_x if need_x else None), (grad_blocks if need_blocks else None), None


rotate.register_autograd(_grad, setup_context=_save)


def main() -> None:
    """``make install``: build the kernel now, showing the compiler's output; exit status 1 where it cannot be."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    built = load(verbose=True)
    print(f"C++ rotation kernel: {'built, ' + built.__file__ if built else 'NOT built: the PyTorch path runs'}")
    raise SystemExit(0 if built else 1)
