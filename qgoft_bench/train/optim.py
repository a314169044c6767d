"""AdamW with parameter groups and a warm-up + decay learning-rate schedule."""

import math

import torch
from omegaconf import DictConfig
from torch import nn
from torch.optim.lr_scheduler import LambdaLR


def build_optimizer(model: nn.Module, head_names: set[str], cfg: DictConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters: biases and norms get no weight decay; the head may get ``head_lr``."""
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lr = cfg.head_lr if (cfg.head_lr is not None and name in head_names) else cfg.lr
        decay = cfg.weight_decay if param.ndim >= 2 else 0.0
        groups.setdefault((lr, decay), []).append(param)
    param_groups = [{"params": p, "lr": lr, "weight_decay": wd} for (lr, wd), p in groups.items()]
    return torch.optim.AdamW(param_groups, lr=cfg.lr)


def build_schedule(optimizer: torch.optim.Optimizer, total_steps: int, cfg: DictConfig) -> LambdaLR:
    """Linear warm-up, then ``linear``, ``cosine`` or ``constant`` down to ``min_lr_ratio`` of each group's lr."""
    warmup = cfg.warmup_steps or round(cfg.warmup_ratio * total_steps)
    floor = cfg.min_lr_ratio

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        if cfg.schedule == "linear":
            decay = 1.0 - progress
        elif cfg.schedule == "cosine":
            decay = 0.5 * (1.0 + math.cos(math.pi * progress))
        else:
            decay = 1.0
        return floor + (1.0 - floor) * decay

    return LambdaLR(optimizer, factor)
