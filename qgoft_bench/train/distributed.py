"""Data parallel across the processes ``torchrun`` starts: one run, one record, the update of a one-process run.

``torchrun --nproc_per_node=N -m qgoft_bench.cli ...`` starts N processes (ranks) with ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK`` in their environment. Without them (or with ``WORLD_SIZE=1``) every function here is the identity
and the run is the plain one-process run, bit for bit. With them:

- ``init`` joins the process group (NCCL on CUDA, gloo on CPU) and puts rank r on ``cuda:LOCAL_RANK``.
- ``trainer.batch_size`` is the global batch, as in a paper: every rank reads every batch in the seeded order and
  keeps its slice of the examples (``shard``), so one update holds ``batch_size x grad_accum`` examples whatever the
  number of ranks. ``wrap`` makes the model a ``DistributedDataParallel``, which averages the ranks' gradients; the
  loop scales each rank's loss so that the average is the one-process gradient (``world_size()``).
- Everything else runs identically on every rank: the method's ``prepare`` on the whole data (before ``wrap``, whose
  construction then copies rank 0's parameters and buffers to every rank, so that masks agree even if a GPU kernel
  broke a tie differently) and every evaluation on the whole evaluation set (world_size x the evaluation compute, no
  faster than one process; every task's metrics hold unchanged). Decisions that must agree (skip the run, stop
  early) are rank 0's, sent to all (``broadcast``).
- Rank 0 claims the run and writes the record and every file beside it; the other ranks write nothing.
"""

import os
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from inspect import signature
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from qgoft_bench.errors import ConfigError

T = TypeVar("T")


def world_size() -> int:
    """How many processes torchrun started for this run (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's rank (0 without torchrun)."""
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """Whether this process writes (the run's claim, record and files): rank 0, or the only process."""
    return rank() == 0


def init(device: torch.device) -> torch.device:
    """Join torchrun's process group (once per process) and return this rank's device: ``cuda:LOCAL_RANK`` for a
    CUDA ``device``, else ``device``. Without torchrun, ``device`` as it is. Raises ``ConfigError`` when this node
    has fewer GPUs than processes."""
    if world_size() == 1:
        return device
    if device.type == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"torchrun started a process with LOCAL_RANK={local_rank} but this node has "
                              f"{torch.cuda.device_count()} GPU(s): set --nproc_per_node to at most that")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        if device.type == "cuda":
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
    return device


def teardown() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def describe() -> dict[str, Any] | None:
    """The record's ``distributed`` entry, ``{"world_size", "backend"}``; None in one process."""
    if not dist.is_initialized():
        return None
    return {"world_size": dist.get_world_size(), "backend": dist.get_backend()}


def broadcast(value: T) -> T:
    """Rank 0's ``value`` (any picklable object) on every rank, so that every rank takes rank 0's decision."""
    if not dist.is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def reduce_sum(value: torch.Tensor) -> torch.Tensor:
    """The sum of ``value`` over the ranks (in place), on every rank."""
    if dist.is_initialized():
        dist.all_reduce(value)
    return value


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` as a ``DistributedDataParallel`` (its construction copies rank 0's parameters and buffers to every
    rank); ``model`` itself in one process."""
    if not dist.is_initialized():
        return model
    # Rank 0's buffers (a method's masks) must reach every rank at construction; after it none changes (no batch
    # norm), so torch >= 2.14 is told not to send them again at every forward (Mixout's: a model's worth). Older
    # torch can only send them at both or at neither (broadcast_buffers): both, correct and costlier.
    new_torch = "forward_sync_buffers" in signature(DistributedDataParallel).parameters
    buffers = {"forward_sync_buffers": False} if new_torch else {}
    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None, **buffers)


def no_sync(forward: Callable, skip: bool) -> AbstractContextManager:
    """Inside it, backward accumulates gradients without the all-reduce when ``skip`` (every micro-batch of an
    update but the last: the ranks' sums are averaged once, in the last backward)."""
    return forward.no_sync() if skip and isinstance(forward, DistributedDataParallel) else nullcontext()


def shard(batch: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """This rank's examples of ``batch`` (a micro-batch of the global batch) and whether they count: the rank-th of
    ``world_size()`` consecutive, near-equal slices along the first dimension of every tensor. In one process,
    ``(batch, True)``. A rank whose slice would be empty (a last batch smaller than the number of ranks) gets the
    batch's first example and False: DDP needs every rank's backward, and its loss must weigh nothing. Raises
    ``ValueError`` for a tensor that is not example-major (a task's batch the split cannot cut)."""
    ranks = world_size()
    if ranks == 1:
        return batch, True
    size = len(next(iter(batch["targets"].values())))
    start, stop = rank() * size // ranks, (rank() + 1) * size // ranks
    if start == stop:
        return _slice(batch, 0, 1, size), False
    return _slice(batch, start, stop, size), True


def _slice(batch: Any, start: int, stop: int, size: int, key: str = "batch") -> Any:
    if isinstance(batch, dict):
        return {k: _slice(v, start, stop, size, k) for k, v in batch.items()}
    if isinstance(batch, torch.Tensor):
        if batch.dim() == 0 or len(batch) != size:
            raise ValueError(f"cannot split {key} (shape {tuple(batch.shape)}) into the {size} examples of its "
                             "batch across ranks: a batch's tensors must have the examples first")
        return batch[start:stop]
    return batch
