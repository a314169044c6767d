"""The training loop: read it top to bottom. One update = ``grad_accum`` micro-batches (fewer at an epoch's end).

The loop runs forward, the task's loss, the method's hooks, backward and the optimizer; what a batch holds, how the
loss is computed from the model's outputs and how a model is evaluated belong to the task (``qgoft_bench.tasks``).
"""

import logging
import math
import time
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn
from tqdm.auto import tqdm

from qgoft_bench.errors import ConfigError, DivergedError
from qgoft_bench.methods import Method
from qgoft_bench.methods.state import trainable_state
from qgoft_bench.tasks import Batch, Predict, Task
from qgoft_bench.train import distributed
from qgoft_bench.train.checkpoint import (
    Checkpointer,
    LoopState,
    loader_generators,
    rng_states,
    set_rng_states,
)
from qgoft_bench.train.optim import build_optimizer, build_schedule
from qgoft_bench.train.signals import deferred_signals

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    epochs: list[dict] = field(default_factory=list)  # {"epoch", "step", "train_loss", "eval": {metric: value}}
    artifacts: list[dict[str, Any]] = field(default_factory=list)  # task.artifacts() of each evaluation, as epochs
    train_time_s: float = 0.0  # all attempts together
    resumed_from: list[int] = field(default_factory=list)  # the updates checkpoints resumed attempts from
    earlier_git: list[dict | None] = field(default_factory=list)  # the git of each attempt before the last


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """bf16 autocast for ``precision`` bf16, or auto on CUDA; float32 otherwise."""
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()


def to_device(batch: Any, device: torch.device) -> Any:
    """``batch`` (nested dicts of tensors) with every tensor on ``device``."""
    if isinstance(batch, dict):
        return {key: to_device(value, device) for key, value in batch.items()}
    return batch.to(device, non_blocking=True) if isinstance(batch, torch.Tensor) else batch


def task_loss(model: nn.Module, task: Task, batch: Batch, device: torch.device, precision: str) -> torch.Tensor:
    """Forward ``batch`` through ``model`` and return the task's loss on it (also what ``Method.prepare`` gets)."""
    batch = to_device(batch, device)
    with autocast(device, precision):
        outputs = model(**batch["inputs"])
    return task.loss(outputs, batch["targets"])


def predictor(model: nn.Module, device: torch.device, precision: str) -> Predict:
    """``inputs -> model outputs`` with no gradient, on ``device`` at ``precision``: what ``Task.evaluate`` calls."""

    @torch.no_grad()
    def predict(inputs: dict[str, torch.Tensor]) -> Any:
        with autocast(device, precision):
            return model(**to_device(inputs, device))

    return predict


def evaluate(model: nn.Module, task: Task, device: torch.device, precision: str) -> dict[str, float]:
    """The task's metrics for ``model`` in eval mode (dropout off); the model is back in train mode afterwards."""
    model.eval()
    try:
        return task.evaluate(predictor(model, device, precision))
    finally:
        model.train()


def evaluate_once(model: nn.Module, task: Task, device: torch.device, precision: str, tracker=None) -> TrainResult:
    """``eval_only``: one evaluation of ``model`` as it is, recorded as epoch 0, step 0 with no train loss."""
    metrics = evaluate(model, task, device, precision)
    print(" ".join(f"{k} {v:.4f}" for k, v in metrics.items()), flush=True)
    if tracker:
        tracker.log({f"eval/{k}": v for k, v in metrics.items()}, 0)
    return TrainResult(epochs=[{"epoch": 0, "step": 0, "eval": metrics}], artifacts=[task.artifacts()])


def windows(batches: Iterable[Batch], size: int) -> Iterator[list[Batch]]:
    """Consecutive groups of ``size`` micro-batches; the last group of an epoch may be shorter."""
    window: list[Batch] = []
    for batch in batches:
        window.append(batch)
        if len(window) == size:
            yield window
            window = []
    if window:
        yield window


def training_step(forward: nn.Module, method: Method, task: Task, window: list[Batch], device: torch.device,
                  precision: str) -> torch.Tensor:
    """Forward and backward of one update's micro-batches (``window``), gradients accumulated, each micro-batch
    weighted by its share of the update's examples, so that a short last window (or a short last batch) counts as
    much per example as a full one. Under torchrun each rank runs its slice of every micro-batch
    (``distributed.shard``) and the gradients are the one-process update's. Returns the update's task loss
    (example-weighted over all ranks, without the regularizer) as a device scalar, the same on every rank; the
    optimizer step is the caller's."""
    window_examples = sum(task.count(batch["targets"]) for batch in window)  # the whole update's, on every rank
    window_loss = torch.zeros((), device=device)
    for i, batch in enumerate(window):
        batch, counts = distributed.shard(batch)
        batch = to_device(batch, device)
        with distributed.no_sync(forward, skip=i < len(window) - 1):  # the ranks' gradients meet in the last backward
            with autocast(device, precision):
                outputs = forward(**batch["inputs"])
            loss = task.loss(outputs, batch["targets"])
            regularizer = method.regularizer()  # e.g. qGOFT's soft orthogonality: once per update in all
            objective = loss if regularizer is None else loss + regularizer
            share = task.count(batch["targets"]) / window_examples if counts else 0.0
            (objective * (share * distributed.world_size())).backward()  # DDP averages over ranks: a sum again
        window_loss += loss.detach() * share
    return distributed.reduce_sum(window_loss)


def train(model: nn.Module, method: Method, task: Task, head_names: set[str], trainer: DictConfig, seed: int,
          device: torch.device, tracker=None, checkpointer: Checkpointer | None = None,
          progress: list[dict] | None = None) -> TrainResult:
    """Train ``model`` on ``task`` with ``method``'s hooks. Evaluations: every ``eval_every`` epochs, or every
    ``eval_every_steps`` updates when that is set, and after the last update; with ``patience``, training stops after
    that many evaluations without a better headline metric (never before ``min_steps`` updates). With a
    ``checkpointer``: resumes from its checkpoint when there is one, and writes one every
    ``trainer.checkpoint_every`` updates and when Ctrl-C or SIGTERM stops the loop (``train.checkpoint``). The
    model ends with the trainable parameters of the best evaluation (the epoch ``tasks.best_epoch`` picks; the last
    update's when no headline value was finite), not the last update's. Raises ``DivergedError`` at the first
    non-finite training loss. ``progress``, when given, is the list the evaluations are appended to (a resumed run's
    earlier ones first), so that the caller still has them when the loop stops with an error or an interrupt."""
    loader = task.train_batches(seed)  # the order depends on the seed alone, whatever the method
    updates_per_epoch = math.ceil(len(loader) / trainer.grad_accum)
    total_updates = trainer.max_steps if trainer.max_steps > 0 else trainer.max_epochs * updates_per_epoch
    num_epochs = math.ceil(total_updates / updates_per_epoch)
    if trainer.eval_every_steps > total_updates:  # e.g. fu2023/main's 500 with a short trainer.max_steps
        log.warning("trainer.eval_every_steps=%d is more than this run's %d updates: it evaluates once, after the "
                    "last update (no early stopping)", trainer.eval_every_steps, total_updates)
    elif trainer.patience and trainer.min_steps >= total_updates:
        log.warning("trainer.min_steps=%d is not below this run's %d updates: early stopping never starts",
                    trainer.min_steps, total_updates)

    optimizer = build_optimizer(model, method, head_names, trainer)  # before a resume: decay anchors are the init
    schedule = build_schedule(optimizer, total_updates, trainer)
    params = [p for p in model.parameters() if p.requires_grad]
    forward = distributed.wrap(torch.compile(model) if trainer.compile else model, device)

    state = LoopState()
    resume = checkpointer.load() if checkpointer else None
    if resume:
        state = checkpointer.restore(resume, model, optimizer, schedule, method)
        state.resumes.append(state.step)
        log.info("resuming from update %d of %d (%s)", state.step, total_updates, checkpointer.path)
    if progress is not None:  # the caller's list: the record of a run that stops shows the evaluations it made
        progress[:] = state.epochs
        state.epochs = progress
    resumed_at = state.step if resume else -1
    if distributed.broadcast(resumed_at) != resumed_at:  # under torchrun: rank 0 wrote it, every rank reads it
        raise ConfigError(f"rank {distributed.rank()} resumes from update {resumed_at} but rank 0 from another: "
                          f"every process must read {checkpointer.path} (a folder all nodes share)")
    result = TrainResult(epochs=state.epochs, artifacts=state.artifacts, resumed_from=state.resumes,
                         earlier_git=state.earlier_git)
    skip = state.window if resume else 0  # batches the resumed epoch trained before the checkpoint
    rng = rng_states()  # as after the last finished update or evaluation (which draws a loader seed from it)
    epoch_generators: list[torch.Tensor] = []  # the loader's generators at the start of state.epoch
    started = time.perf_counter()
    loss_sum = torch.full((), state.loss_sum, device=device)  # kept on the device: no host sync per update

    saved_at = state.step  # the update the checkpoint on disk (if any) was written after

    def checkpoint() -> None:
        nonlocal saved_at
        tallies = replace(state, loss_sum=loss_sum.item(),
                          train_time_s=state.train_time_s + time.perf_counter() - started)
        if distributed.is_main():  # every rank holds the same weights, optimizer and position; rank 0 writes
            checkpointer.save(model, optimizer, schedule, method, tallies, rng, epoch_generators)
        saved_at = state.step

    def patience_out() -> bool:
        return bool(trainer.patience) and state.since_best >= trainer.patience and state.step >= trainer.min_steps

    def evaluate_now() -> bool:
        """Evaluate after update ``state.step``, log, and say whether patience has run out."""
        nonlocal loss_sum, rng
        train_loss = (loss_sum / max(state.examples, 1)).item()  # the task loss, example-weighted (no regularizer)
        metrics = evaluate(model, task, device, trainer.precision)
        with deferred_signals():  # the evaluation and the tallies it resets change together
            state.epochs.append({"epoch": state.epoch, "step": state.step, "train_loss": train_loss, "eval": metrics})
            state.artifacts.append(task.artifacts())
            loss_sum, state.examples = torch.zeros((), device=device), 0
            value = metrics.get(task.headline, math.nan)
            if math.isfinite(value) and (state.best is None or
                                         (value > state.best if task.higher_is_better else value < state.best)):
                state.best, state.since_best = value, 0
                state.best_trainable = {k: v.to("cpu", copy=True) for k, v in trainable_state(model).items()}
            else:
                state.since_best += 1
            rng = rng_states()
        if distributed.is_main():
            bar.write(f"epoch {state.epoch} step {state.step} loss {train_loss:.4f} " +
                      " ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        if tracker:
            tracker.log({f"eval/{k}": v for k, v in metrics.items()}, state.step)
        return distributed.broadcast(patience_out())  # rank 0's decision: every rank stops at the same update

    def evaluated_now() -> bool:
        return bool(state.epochs) and state.epochs[-1]["step"] == state.step

    def step_evaluation() -> bool:
        """The evaluation every ``eval_every_steps`` updates, if due now and not yet done; whether to stop."""
        if trainer.eval_every_steps and state.step % trainer.eval_every_steps == 0 and not evaluated_now():
            return evaluate_now()
        return False

    def resume_here() -> bool:
        """At the point the checkpoint was taken (after its update, before the next batch is drawn): restore the
        random states, do what that update still owed (an interrupted evaluation), and say whether to stop."""
        nonlocal resume
        set_rng_states(resume["rng"])
        resume = None
        return step_evaluation() or (evaluated_now() and patience_out())

    # a context, so the bar is closed (its last line written) before an error or an interrupt is reported
    with tqdm(total=total_updates, initial=state.step, disable=not (trainer.progress and distributed.is_main()),
              desc=task.name,
              dynamic_ncols=True) as bar:
        model.train()
        try:
            stop = False
            for epoch in range(state.epoch, num_epochs + 1):
                if stop or state.step >= total_updates:
                    break
                with deferred_signals():
                    if epoch != state.epoch:
                        state.epoch, state.window = epoch, 0
                    elif resume:
                        for generator, saved in zip(loader_generators(loader), resume["generators"], strict=True):
                            generator.set_state(saved)
                    epoch_generators = [g.get_state() for g in loader_generators(loader)]
                if resume and not skip and resume_here():  # before the epoch's first batch is drawn
                    break
                for window in windows(loader, trainer.grad_accum):
                    if skip:  # this epoch's batches the checkpoint already trained: drawn again, not trained
                        skip -= 1
                        if not skip and resume_here():
                            stop = True
                            break
                        continue
                    window_loss = training_step(forward, method, task, window, device, trainer.precision)
                    window_examples = sum(task.count(batch["targets"]) for batch in window)
                    if not torch.isfinite(window_loss):  # one host sync per update: a NaN must not reach the weights
                        raise DivergedError(f"the training loss is {window_loss.item()} at update {state.step + 1} "
                                            f"(epoch {epoch}); lower trainer.lr or check the data")
                    with deferred_signals():  # an update is taken whole or not at all: what a checkpoint relies on
                        if trainer.clip_grad:
                            torch.nn.utils.clip_grad_norm_(params, trainer.clip_grad)
                        optimizer.step()
                        schedule.step()
                        method.after_step(state.step, total_updates)  # e.g. AdaLoRA's ranks: reads the gradients
                        optimizer.zero_grad(set_to_none=True)
                        loss_sum += window_loss * window_examples
                        state.examples += window_examples
                        state.step += 1
                        state.window += 1
                        rng = rng_states()
                    bar.update()
                    if state.step % 10 == 0:  # display and tracking every few updates
                        bar.set_postfix(loss=f"{window_loss.item():.4f}")
                        if tracker:
                            tracker.log({"train/loss": window_loss.item(), "train/lr": schedule.get_last_lr()[0]},
                                        state.step)
                    stop = step_evaluation()
                    if stop or state.step >= total_updates:
                        break
                    if checkpointer and trainer.checkpoint_every and state.step % trainer.checkpoint_every == 0:
                        checkpoint()
                done = stop or state.step >= total_updates
                by_epoch = not trainer.eval_every_steps and epoch % trainer.eval_every == 0
                if not stop and (by_epoch or done) and not evaluated_now():
                    stop = evaluate_now()  # by epoch
            if not stop and not evaluated_now():
                evaluate_now()  # always after the last update (also when a resumed run had none left to take)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: keep what the finished updates did
            if checkpointer and trainer.checkpoint_every and state.step > saved_at:
                with deferred_signals():
                    checkpoint()
                log.info("checkpoint at update %d: the same command resumes from it", state.step)
            raise
    # the record reports the best evaluation (tasks.best_epoch: the first of the best values, as above), so the
    # model leaves with its weights: the saved adapter, Vicuna answers and sparsity report are of that model
    if state.best_trainable is not None:
        with torch.no_grad():
            for name, param in trainable_state(model).items():
                param.copy_(state.best_trainable[name])
    elif state.best is not None:
        log.warning("the checkpoint this run resumed from (an earlier version's) kept no weights of its best "
                    "evaluation: the model, and any saved adapter, hold the last update's")
    result.train_time_s = state.train_time_s + time.perf_counter() - started
    return result
