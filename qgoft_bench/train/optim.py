"""AdamW with parameter groups from the method's decay rules, and a warm-up + decay learning-rate schedule."""

import logging
import math

import torch
from omegaconf import DictConfig
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from qgoft_bench.errors import ConfigError
from qgoft_bench.methods import Decay, Method, conventional_decay

log = logging.getLogger(__name__)


class AdamW(torch.optim.AdamW):
    """``torch.optim.AdamW`` whose groups may decay toward anchors instead of zero.

    A group with ``anchors`` (one tensor per parameter, its value when the optimizer was built) and
    ``anchor_decay`` (the weight decay) takes p <- p - lr * anchor_decay * (p - anchor) before the Adam update, the
    decoupled order of Loshchilov & Hutter (2019) that ``torch.optim.AdamW`` uses toward zero; its own
    ``weight_decay`` is 0. As torch does, a parameter without a gradient is left alone.
    """

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for param, anchor in zip(group["params"], group.get("anchors", ()), strict=False):
                if param.grad is not None:
                    param.sub_(param - anchor, alpha=group["lr"] * group["anchor_decay"])
        return super().step(closure)


def build_optimizer(model: nn.Module, method: Method, head_names: set[str], cfg: DictConfig) -> AdamW:
    """AdamW over the trainable parameters of ``model``.

    The head follows the usual convention (matrices decay toward zero, vectors do not) and may have its own
    ``cfg.head_lr``; every other parameter decays as ``method.decay(name, param)`` says: toward zero, toward its
    current (initial) value, or not at all.
    """
    groups: dict[tuple[float, Decay], list[tuple[str, nn.Parameter]]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        in_head = name in head_names
        lr = cfg.head_lr if (cfg.head_lr is not None and in_head) else cfg.lr
        rule = conventional_decay(param) if in_head else method.decay(name, param)
        groups.setdefault((lr, rule), []).append((name, param))
    param_groups = []
    for (lr, rule), named in groups.items():
        params = [p for _, p in named]
        group = {"params": params, "lr": lr, "weight_decay": cfg.weight_decay if rule == "zero" else 0.0,
                 "decay": rule}
        if rule == "init":
            group.update(anchors=[p.detach().clone() for p in params], anchor_decay=cfg.weight_decay)
        param_groups.append(group)
    return AdamW(param_groups, lr=cfg.lr)


def build_schedule(optimizer: torch.optim.Optimizer, total_steps: int, cfg: DictConfig) -> LambdaLR:
    """Linear warm-up, then ``linear``, ``cosine`` or ``constant`` down to ``min_lr_ratio`` of each group's lr.
    Warns when the warm-up is as long as the run (a recipe's ``warmup_steps`` on a short run): the rate then never
    reaches its peak. Raises ``ConfigError`` for an unknown ``schedule``."""
    warmup = cfg.warmup_steps or round(cfg.warmup_ratio * total_steps)
    if warmup >= total_steps:
        log.warning("trainer.warmup_steps=%d is not below the run's %d updates: the learning rate rises to %.3g of "
                    "trainer.lr and never reaches it; lower trainer.warmup_steps, or set it to 0 to use "
                    "trainer.warmup_ratio", warmup, total_steps, total_steps / (warmup + 1))
    floor = cfg.min_lr_ratio
    decays = {
        "linear": lambda progress: 1.0 - progress,
        "cosine": lambda progress: 0.5 * (1.0 + math.cos(math.pi * progress)),
        "constant": lambda progress: 1.0,
    }
    if cfg.schedule not in decays:
        raise ConfigError(f"trainer.schedule={cfg.schedule!r} is not one of {', '.join(decays)}; set one of those")
    decay = decays[cfg.schedule]

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return floor + (1.0 - floor) * decay(progress)

    return LambdaLR(optimizer, factor)
