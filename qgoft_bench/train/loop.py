"""The training loop: read it top to bottom. One update = ``grad_accum`` micro-batches (fewer at an epoch's end).

The loop runs forward, the task's loss, the method's hooks, backward and the optimizer; what a batch holds, how the
loss is computed from the model's outputs and how a model is evaluated belong to the task (``qgoft_bench.tasks``).
"""

import math
import time
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn
from tqdm.auto import tqdm

from qgoft_bench.errors import DivergedError
from qgoft_bench.methods import Method
from qgoft_bench.tasks import Batch, Predict, Task
from qgoft_bench.train import distributed
from qgoft_bench.train.optim import build_optimizer, build_schedule


@dataclass
class TrainResult:
    epochs: list[dict] = field(default_factory=list)  # {"epoch", "step", "train_loss", "eval": {metric: value}}
    artifacts: list[dict[str, Any]] = field(default_factory=list)  # task.artifacts() of each evaluation, as epochs
    train_time_s: float = 0.0


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
          device: torch.device, tracker=None) -> TrainResult:
    """Train ``model`` on ``task`` with ``method``'s hooks. Evaluations: every ``eval_every`` epochs, or every
    ``eval_every_steps`` updates when that is set, and after the last update; with ``patience``, training stops after
    that many evaluations without a better headline metric (never before ``min_steps`` updates). Raises
    ``DivergedError`` at the first non-finite training loss."""
    loader = task.train_batches(seed)  # the order depends on the seed alone, whatever the method
    updates_per_epoch = math.ceil(len(loader) / trainer.grad_accum)
    total_updates = trainer.max_steps if trainer.max_steps > 0 else trainer.max_epochs * updates_per_epoch
    num_epochs = math.ceil(total_updates / updates_per_epoch)

    optimizer = build_optimizer(model, method, head_names, trainer)
    schedule = build_schedule(optimizer, total_updates, trainer)
    params = [p for p in model.parameters() if p.requires_grad]
    forward = distributed.wrap(torch.compile(model) if trainer.compile else model, device)

    result = TrainResult()
    step, started = 0, time.perf_counter()
    loss_sum, examples = torch.zeros((), device=device), 0  # since the last evaluation
    best, since_best = None, 0  # the best headline value so far, and evaluations since it

    def evaluate_now(epoch: int) -> bool:
        """Evaluate, log, and say whether patience has run out."""
        nonlocal loss_sum, examples, best, since_best
        train_loss = (loss_sum / max(examples, 1)).item()  # the task loss, example-weighted (no regularizer)
        metrics = evaluate(model, task, device, trainer.precision)
        result.epochs.append({"epoch": epoch, "step": step, "train_loss": train_loss, "eval": metrics})
        result.artifacts.append(task.artifacts())
        if distributed.is_main():
            bar.write(f"epoch {epoch} step {step} loss {train_loss:.4f} " +
                      " ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        if tracker:
            tracker.log({f"eval/{k}": v for k, v in metrics.items()}, step)
        loss_sum, examples = torch.zeros((), device=device), 0
        value = metrics.get(task.headline, math.nan)
        if math.isfinite(value) and (best is None or (value > best if task.higher_is_better else value < best)):
            best, since_best = value, 0
        else:
            since_best += 1
        stop = bool(trainer.patience) and since_best >= trainer.patience and step >= trainer.min_steps
        return distributed.broadcast(stop)  # rank 0's decision: every rank stops at the same update

    # a context, so the bar is closed (its last line written) before an error or an interrupt is reported
    with tqdm(total=total_updates, disable=not (trainer.progress and distributed.is_main()), desc=task.name,
              dynamic_ncols=True) as bar:
        model.train()
        stop = False
        for epoch in range(1, num_epochs + 1):
            for window in windows(loader, trainer.grad_accum):
                window_loss = training_step(forward, method, task, window, device, trainer.precision)
                window_examples = sum(task.count(batch["targets"]) for batch in window)
                if not torch.isfinite(window_loss):  # one host sync per update: a NaN must not reach the weights
                    raise DivergedError(f"the training loss is {window_loss.item()} at update {step + 1} (epoch "
                                        f"{epoch}); lower trainer.lr or check the data")
                loss_sum += window_loss * window_examples
                examples += window_examples

                if trainer.clip_grad:
                    torch.nn.utils.clip_grad_norm_(params, trainer.clip_grad)
                optimizer.step()
                schedule.step()
                method.after_step(step, total_updates)  # e.g. AdaLoRA's rank allocation: reads the gradients
                optimizer.zero_grad(set_to_none=True)
                step += 1
                bar.update()
                if step % 10 == 0:  # display and tracking every few updates
                    bar.set_postfix(loss=f"{window_loss.item():.4f}")
                    if tracker:
                        tracker.log({"train/loss": window_loss.item(), "train/lr": schedule.get_last_lr()[0]}, step)
                if trainer.eval_every_steps and step % trainer.eval_every_steps == 0:
                    stop = evaluate_now(epoch)
                if stop or step >= total_updates:
                    break
            done = stop or step >= total_updates
            by_epoch = not trainer.eval_every_steps and epoch % trainer.eval_every == 0
            if not stop and (by_epoch or done) and (not result.epochs or result.epochs[-1]["step"] != step):
                stop = evaluate_now(epoch)  # by epoch, and always after the last update
            if done or stop:
                break
    result.train_time_s = time.perf_counter() - started
    return result
