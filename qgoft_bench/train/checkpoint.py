"""Checkpoints of a training run, so that a killed or preempted run resumes where it stopped.

A checkpoint (``<record stem>.checkpoint.pt`` beside the run's record) holds what the rebuilt run cannot rebuild
by itself: the trainable parameters (adapter and head), the optimizer's and the schedule's state, the method's own
(``Method.state_dict``, e.g. AdaLoRA's importance averages), the random states (torch CPU and CUDA, numpy, Python)
as they were after the last finished update, the training loader's generators as they were at the start of that
update's epoch, and the loop's position and tallies (``LoopState``, with the trainable parameters of the best
evaluation so far). Everything else (the frozen model, a sparse
method's mask from ``prepare``) is rebuilt from the config and the seed exactly as the first attempt built it.

The loop writes one every ``trainer.checkpoint_every`` updates and when Ctrl-C or SIGTERM stops it, always for a
state between two updates (the update itself runs with those signals held); the resumed run skips the batches the
checkpoint's epoch already trained and restores the random states just before the next one is drawn, so it takes
the same updates on the same batches with the same dropout as a run that was never stopped. The run deletes the
checkpoint once its final record is stored.

The file is ``torch.save``'s archive followed by ``TRAILER`` and the sha256 of the archive (zip readers, torch's
included, find the archive's directory from its end and skip what follows), and holds only tensors and plain
values, so it is read with ``torch.load(weights_only=True)``: a checkpoint damaged in place, truncated, of another
format or config is not resumed (a warning; the run starts from the beginning). A checkpoint that cannot be written
(a full disk) is a warning too: training goes on, and a stop then resumes from the previous one.
"""

import hashlib
import logging
import pickle
import random
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from qgoft_bench.files import update_with_file
from qgoft_bench.methods import Method
from qgoft_bench.methods.state import trainable_state
from qgoft_bench.records import atomic_file

log = logging.getLogger(__name__)
FORMAT = 2  # bump when the layout below changes; a checkpoint of another format is not resumed
TRAILER = b"\nqgoft-bench checkpoint sha256:"  # then the 32-byte digest of everything before it


@dataclass
class LoopState:
    """Where the training loop is, between two updates; what a checkpoint resumes."""

    step: int = 0  # updates taken
    epoch: int = 1  # the epoch the last update belongs to (1-based)
    window: int = 0  # updates taken in that epoch
    loss_sum: float = 0.0  # example-weighted task loss since the last evaluation
    examples: int = 0  # examples behind loss_sum
    best: float | None = None  # the best headline value so far
    since_best: int = 0  # evaluations since it
    train_time_s: float = 0.0  # training time of the attempts before this one
    epochs: list[dict] = field(default_factory=list)  # the evaluations so far (TrainResult.epochs)
    artifacts: list[dict] = field(default_factory=list)  # and their task.artifacts()
    resumes: list[int] = field(default_factory=list)  # the updates earlier attempts were resumed from
    earlier_git: list[dict | None] = field(default_factory=list)  # each earlier attempt's git (None: not recorded)
    best_trainable: dict[str, torch.Tensor] | None = None  # the trainable parameters (on CPU) behind ``best``


def rng_states() -> dict[str, Any]:
    """Every random state the training can draw from: torch (CPU, each CUDA device), numpy (its Mersenne Twister
    key as an int64 tensor, so that the checkpoint holds no ndarray), Python."""
    kind, key, pos, has_gauss, cached_gaussian = np.random.get_state()
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": (kind, torch.from_numpy(key.astype(np.int64)), pos, has_gauss, cached_gaussian),
            "python": random.getstate()}


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what ``rng_states`` returned."""
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    kind, key, pos, has_gauss, cached_gaussian = states["numpy"]
    np.random.set_state((kind, key.numpy().astype(np.uint32), pos, has_gauss, cached_gaussian))
    random.setstate(states["python"])


class _HashingWriter:
    """A binary file that also feeds what is written to ``digest``."""

    def __init__(self, f: Any, digest: Any) -> None:
        self.f, self.digest = f, digest

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def loader_generators(loader: DataLoader | Iterable) -> list[torch.Generator]:
    """The generators that decide a training loader's order: its own (a shuffled loader's sampler shares it) and a
    batch sampler's (``tasks.instruct.LengthGroupedBatches``), each once; none for a plain iterable of batches."""
    found = [getattr(loader, "generator", None), getattr(getattr(loader, "sampler", None), "generator", None),
             getattr(getattr(loader, "batch_sampler", None), "generator", None)]
    unique: list[torch.Generator] = []
    for generator in found:
        if generator is not None and all(generator is not g for g in unique):
            unique.append(generator)
    return unique


class _Limited:
    """The first ``size`` bytes of the open binary file ``f``, read through ``read``."""

    def __init__(self, f: Any, size: int) -> None:
        self.f, self.left = f, size

    def read(self, n: int) -> bytes:
        data = self.f.read(min(n, self.left))
        self.left -= len(data)
        return data


@dataclass
class Checkpointer:
    """Writes and reads one run's checkpoint at ``path``; ``identity`` (run id, data fingerprint, and whether the
    attempt is an ``overwrite=true`` one) must match for a checkpoint to be resumed. ``git``: the code this attempt
    runs (``provenance.git_revision``), kept in the checkpoint so that a record of a resumed run names every
    attempt's code, not only the last one's."""

    path: Path
    identity: dict[str, Any]
    git: dict[str, Any] | None = None
    failed_writes: int = 0  # checkpoints that could not be written (the first is a warning, the rest debug lines)

    def save(self, model: nn.Module, optimizer: torch.optim.Optimizer, schedule: Any, method: Method,
             state: LoopState, rng: dict[str, Any], generators: list[torch.Tensor]) -> None:
        """Write the checkpoint atomically (``records.atomic_file``), its checksum after it; a write that fails (a
        full disk) leaves the previous checkpoint as it was and is a warning, not an error."""
        loop = {f.name: getattr(state, f.name) for f in fields(state)}  # asdict would deep-copy best_trainable
        payload = {"format": FORMAT, "identity": self.identity, "git": self.git, "loop": loop, "rng": rng,
                   "generators": generators, "trainable": {k: v.cpu() for k, v in trainable_state(model).items()},
                   "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                   "method": method.state_dict()}
        try:
            with atomic_file(self.path, "wb") as f:
                digest = hashlib.sha256()
                torch.save(payload, _HashingWriter(f, digest))
                f.write(TRAILER + digest.digest())
        except (OSError, RuntimeError) as err:  # torch's archive writer reports a failed write as RuntimeError
            self.failed_writes += 1
            log.log(logging.WARNING if self.failed_writes == 1 else logging.DEBUG,
                    "checkpoint at update %d could not be written to %s (%s): training goes on; a stop now resumes "
                    "from the previous checkpoint, if any (later failures are not repeated here)", state.step,
                    self.path, err)
            return
        log.debug("checkpoint at update %d: %s", state.step, self.path)

    def _intact(self) -> bool:
        """Whether the file ends with ``TRAILER`` and the sha256 of what precedes it."""
        size = self.path.stat().st_size - len(TRAILER) - 32
        if size <= 0:
            return False
        digest = hashlib.sha256()
        with open(self.path, "rb") as f:
            update_with_file(digest, _Limited(f, size))
            return f.read() == TRAILER + digest.digest()

    def load(self) -> dict[str, Any] | None:
        """The checkpoint's contents, or None when there is none, it cannot be read, or it belongs to another
        config, data or format (said in a warning; the run then starts from the beginning and replaces it)."""
        if not self.path.exists():
            return None
        try:
            if not self._intact():  # starting over loses time, not results
                log.warning("checkpoint %s is damaged or of an earlier format (its checksum does not match): "
                            "starting from the beginning", self.path)
                return None
            payload = torch.load(self.path, map_location="cpu", weights_only=True)
        except (OSError, EOFError, RuntimeError, pickle.UnpicklingError) as err:
            log.warning("checkpoint %s cannot be read (%s): starting from the beginning", self.path, err)
            return None
        if not isinstance(payload, dict) or payload.get("format") != FORMAT or payload.get("identity") != self.identity:
            log.warning("checkpoint %s is of another config, data, format or overwrite setting: starting from the "
                        "beginning", self.path)
            return None
        return payload

    def restore(self, payload: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer, schedule: Any,
                method: Method) -> LoopState:
        """Load the trainable parameters and the optimizer's, schedule's and method's state of ``payload`` (from
        ``load``) into the rebuilt run; returns the loop's state. The caller restores the random states and the
        loader's position."""
        state = trainable_state(model)
        with torch.no_grad():
            for name, param in state.items():
                param.copy_(payload["trainable"][name])
        optimizer.load_state_dict(payload["optimizer"])
        schedule.load_state_dict(payload["schedule"])
        method.load_state_dict(payload["method"])
        state = LoopState(**payload["loop"])
        state.earlier_git.append(payload.get("git"))  # the attempt that wrote it (None: a checkpoint without it)
        return state

    def delete(self) -> None:
        """Remove the checkpoint (after the run's final record is stored)."""
        self.path.unlink(missing_ok=True)
