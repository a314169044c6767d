"""What a method trained, saved and loaded as a whole: the adapter together with the task head.

A saved file holds every trainable parameter of the adapted model by its dotted name (safetensors), so loading it
into a model built the same way (same model, task head, method and config) reproduces the trained model's outputs
exactly; a model built otherwise is refused in one line.
"""

import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from qgoft_bench.errors import ConfigError


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter of ``model`` that requires grad (adapter and head), by dotted name."""
    return {name: param.detach() for name, param in model.named_parameters() if param.requires_grad}


def save_adapter(model: nn.Module, path: str | Path) -> None:
    """Write the adapter and the task head of ``model`` to the safetensors file ``path`` (atomically: a temporary
    file in the same folder, renamed over ``path``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        save_file({k: v.contiguous().cpu() for k, v in trainable_state(model).items()}, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_adapter(model: nn.Module, path: str | Path) -> None:
    """Load a file written by ``save_adapter`` into ``model``, which must be built and adapted the same way; raises
    ``ConfigError`` naming the parameters that do not match."""
    loaded = load_file(str(path))
    state = trainable_state(model)
    missing, unexpected = sorted(set(state) - set(loaded)), sorted(set(loaded) - set(state))
    shapes = sorted(k for k in set(state) & set(loaded) if state[k].shape != loaded[k].shape)
    if missing or unexpected or shapes:
        raise ConfigError(f"adapter file {path} does not fit the model: missing {missing[:3]}, unexpected "
                          f"{unexpected[:3]}, other shapes {shapes[:3]}; build the model with the run's config")
    with torch.no_grad():
        for name, param in state.items():
            param.copy_(loaded[name])
