"""Shared by the method tests: a tiny model of each architecture with a task that fits it, and a fixed batch."""

import torch

from qgoft_bench.config import compose_config
from qgoft_bench.train.run import build


def task_for(model_name: str) -> str:
    return "task=vtab/digits" if "vit" in model_name else "task=glue/rte"


def build_run(model_name: str, overrides: list[str]):
    """(model, method, bundle) of ``model_name`` adapted by ``overrides``."""
    return build(compose_config([f"model={model_name}", task_for(model_name), *overrides]))


def synthetic_batch(model_name: str, n: int = 16) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Fixed random inputs with a label rule the model can learn (one token / the mean of one channel)."""
    gen = torch.Generator().manual_seed(0)
    if "vit" in model_name:
        pixels = torch.randn(n, 3, 32, 32, generator=gen)
        return {"pixel_values": pixels}, (pixels[:, 0].mean((1, 2)) > 0).long()
    ids = torch.randint(1, 100, (n, 12), generator=gen)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, (ids[:, 1] > 50).long()
