"""The training loop: read it top to bottom. One update = ``grad_accum`` micro-batches."""

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn
from tqdm.auto import tqdm

from qgoft_bench.data import TaskData
from qgoft_bench.methods import Method
from qgoft_bench.train.optim import build_optimizer, build_schedule


@dataclass
class TrainResult:
    epochs: list[dict] = field(default_factory=list)  # {"epoch", "step", "train_loss", "eval": {metric: value}}
    train_time_s: float = 0.0


def task_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for classification; MSE when the head has one output (regression, e.g. STS-B)."""
    logits = logits.float()  # the loss in float32 even under bf16 autocast
    if logits.shape[-1] == 1:
        return F.mse_loss(logits.squeeze(-1), labels.float())
    return F.cross_entropy(logits, labels)


def _autocast(device: torch.device, precision: str):
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()


@torch.no_grad()
def evaluate(model: nn.Module, data: TaskData, device: torch.device, precision: str) -> dict[str, float]:
    """Metrics on every eval split, merged into one dict."""
    model.eval()
    metrics: dict[str, float] = {}
    for split, loader in data.evals.items():
        logits, labels = [], []
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            labels.append(batch.pop("labels").cpu())
            with _autocast(device, precision):
                logits.append(model(**batch).logits.float().cpu())
        metrics.update(data.compute_metrics(split, torch.cat(logits).numpy(), torch.cat(labels).numpy()))
    model.train()
    return metrics


def train(model: nn.Module, method: Method, data: TaskData, head_names: set[str], cfg: DictConfig,
          device: torch.device, tracker=None) -> TrainResult:
    """Train ``model`` with ``method``'s hooks, evaluating every ``eval_every`` epochs and after the last update."""
    tcfg = cfg.trainer
    updates_per_epoch = math.ceil(len(data.train) / tcfg.grad_accum)
    total_updates = tcfg.max_steps if tcfg.max_steps > 0 else tcfg.max_epochs * updates_per_epoch
    num_epochs = math.ceil(total_updates / updates_per_epoch)

    optimizer = build_optimizer(model, head_names, tcfg)
    schedule = build_schedule(optimizer, total_updates, tcfg)
    params = [p for p in model.parameters() if p.requires_grad]
    forward = torch.compile(model) if tcfg.compile else model

    result = TrainResult()
    step, started = 0, time.perf_counter()
    bar = tqdm(total=total_updates, disable=not tcfg.progress, desc=cfg.task.name, dynamic_ncols=True)
    model.train()
    for epoch in range(1, num_epochs + 1):
        losses = []
        for micro, batch in enumerate(data.train):
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            labels = batch.pop("labels")
            with _autocast(device, tcfg.precision):
                logits = forward(**batch).logits
            loss = task_loss(logits, labels)
            regularizer = method.regularizer()  # e.g. qGOFT's soft orthogonality; None for most methods
            if regularizer is not None:
                loss = loss + regularizer
            (loss / tcfg.grad_accum).backward()
            losses.append(loss.detach())
            if (micro + 1) % tcfg.grad_accum and micro + 1 != len(data.train):
                continue  # keep accumulating until a full update's worth of micro-batches

            method.mask_gradients()  # sparse methods zero what they do not tune, before clipping sees it
            if tcfg.clip_grad:
                torch.nn.utils.clip_grad_norm_(params, tcfg.clip_grad)
            optimizer.step()
            schedule.step()
            method.after_step(step, total_updates)  # e.g. AdaLoRA's rank allocation, which reads the gradients
            optimizer.zero_grad(set_to_none=True)
            step += 1
            bar.update()
            if step % 10 == 0:  # a host sync for display only every few updates
                bar.set_postfix(loss=f"{torch.stack(losses[-10:]).mean().item():.4f}")
                if tracker:
                    tracker.log({"train/loss": losses[-1].item(), "train/lr": schedule.get_last_lr()[0]}, step)
            if step >= total_updates:
                break

        if epoch % tcfg.eval_every == 0 or step >= total_updates:
            train_loss = torch.stack(losses).mean().item()
            metrics = evaluate(model, data, device, tcfg.precision)
            result.epochs.append({"epoch": epoch, "step": step, "train_loss": train_loss, "eval": metrics})
            bar.write(f"epoch {epoch} step {step} loss {train_loss:.4f} " +
                      " ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
            if tracker:
                tracker.log({f"eval/{k}": v for k, v in metrics.items()}, step)
        if step >= total_updates:
            break
    bar.close()
    result.train_time_s = time.perf_counter() - started
    return result


def best_and_last(epochs: list[dict], metric: str) -> tuple[dict, dict]:
    """The epoch with the highest headline ``metric`` and the last epoch, each flattened to {"epoch", metrics...}."""
    flat = [{"epoch": e["epoch"], "step": e["step"], **e["eval"]} for e in epochs]
    scores = [row.get(metric, -np.inf) for row in flat]
    return flat[int(np.nanargmax(scores))], flat[-1]
