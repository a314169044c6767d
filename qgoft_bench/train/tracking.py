"""Experiment trackers, never the source of truth (the JSON record is): none by default; ``tracker=wandb``
(offline unless WANDB_MODE says otherwise) or ``tracker=tensorboard`` (event files beside the record, in
``<record stem>.tensorboard/``). Both log the training loss and learning rate every 10 updates and every
evaluation's metrics, at the update they were taken."""

import os
from pathlib import Path
from typing import Protocol

from omegaconf import DictConfig, OmegaConf

from qgoft_bench.errors import ConfigError


class Tracker(Protocol):
    def log(self, values: dict[str, float], step: int) -> None: ...

    def finish(self) -> None: ...


class WandbTracker:
    def __init__(self, cfg: DictConfig, name: str) -> None:
        try:
            import wandb
        except ImportError:
            raise ConfigError("tracker=wandb needs wandb: pip install 'qgoft-bench[wandb]'") from None
        mode = os.environ.get("WANDB_MODE", cfg.tracker.mode)
        self.run = wandb.init(project=cfg.tracker.project, name=name, mode=mode,
                              config=OmegaConf.to_container(cfg, resolve=True))

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def finish(self) -> None:
        self.run.finish()


class TensorBoardTracker:
    """``torch.utils.tensorboard``'s SummaryWriter into ``log_dir``; the resolved config as its text summary."""

    def __init__(self, cfg: DictConfig, log_dir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("tracker=tensorboard needs tensorboard: pip install 'qgoft-bench[tensorboard]'") from None
        self.writer = SummaryWriter(log_dir=str(log_dir))
        self.writer.add_text("config", f"```\n{OmegaConf.to_yaml(cfg, resolve=True)}\n```")

    def log(self, values: dict[str, float], step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def finish(self) -> None:
        self.writer.close()


def make_tracker(cfg: DictConfig, name: str, record: Path) -> Tracker | None:
    """The tracker ``cfg.tracker.name`` asks for, for the run ``name`` whose record is ``record``."""
    if cfg.tracker.name == "none":
        return None
    if cfg.tracker.name == "wandb":
        return WandbTracker(cfg, name)
    if cfg.tracker.name == "tensorboard":
        return TensorBoardTracker(cfg, record.with_suffix(".tensorboard"))
    raise ConfigError(f"unknown tracker {cfg.tracker.name!r}; use tracker=none, wandb or tensorboard")
