"""Experiment trackers: none by default; wandb only when asked (``tracker=wandb``), offline unless WANDB_MODE says."""

import os

from omegaconf import DictConfig, OmegaConf

from qgoft_bench.errors import ConfigError


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


def make_tracker(cfg: DictConfig, name: str) -> WandbTracker | None:
    if cfg.tracker.name == "none":
        return None
    if cfg.tracker.name == "wandb":
        return WandbTracker(cfg, name)
    raise ConfigError(f"unknown tracker {cfg.tracker.name!r}; use tracker=none or tracker=wandb")
