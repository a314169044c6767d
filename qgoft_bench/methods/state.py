"""What a method trained, saved and loaded as a whole: the adapter together with the task head.

A saved file holds every trainable parameter of the adapted model by its dotted name (safetensors), so loading it
into a model built the same way (same model, task head, method, config and seed: a random backbone and a sparse
mask come from the seed) reproduces the trained model's outputs exactly. The file's metadata (key ``qgoft_bench``,
JSON) names the run that wrote it (``adapter_origin``: run id, task, model, method, seed) and holds the sha256 of its
tensors, so a file of another run, or one damaged since, is refused in one line rather than scored.
"""

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes
from torch import nn

from qgoft_bench.errors import ConfigError
from qgoft_bench.records import atomic_file

METADATA_KEY = "qgoft_bench"


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter of ``model`` that requires grad (adapter and head), by dotted name."""
    return {name: param.detach() for name, param in model.named_parameters() if param.requires_grad}


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over the names, dtypes, shapes and bytes of ``tensors``, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def adapter_origin(config: dict[str, Any], run_id: str) -> dict[str, Any]:
    """What decides how a saved adapter's model is built: the run id, task name, model and method configs, seed."""
    return {"run_id": run_id, "task": config["task"]["name"], "model": config["model"], "method": config["method"],
            "seed": config["seed"]}


def save_adapter(model: nn.Module, path: str | Path, origin: dict[str, Any]) -> str:
    """Write the adapter and the task head of ``model`` to the safetensors file ``path`` (``records.atomic_file``),
    with ``origin`` (``adapter_origin`` of the run) and the tensors' sha256 as metadata; returns the file's sha256."""
    tensors = {k: v.contiguous().cpu() for k, v in trainable_state(model).items()}
    metadata = {METADATA_KEY: json.dumps({**origin, "tensors_sha256": tensors_sha256(tensors)})}
    data = safetensors_bytes(tensors, metadata=metadata)
    with atomic_file(Path(path), "wb") as f:
        f.write(data)
    return hashlib.sha256(data).hexdigest()


def _read(path: str | Path, tensors: bool) -> tuple[dict[str, Any] | None, dict[str, torch.Tensor]]:
    """(the provenance ``save_adapter`` wrote into ``path``, None for a file without it; its tensors when
    ``tensors``, else none), from one opening of the file; ``ConfigError`` when it is not a readable safetensors
    file."""
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            loaded = {name: f.get_tensor(name) for name in f.keys()} if tensors else {}  # noqa: SIM118 - a handle, not a dict
    except (SafetensorError, OSError) as err:
        raise ConfigError(f"adapter file {path} cannot be read ({err}): it is damaged or not a file "
                          "save_adapter=true wrote") from None
    return (json.loads(metadata[METADATA_KEY]) if METADATA_KEY in metadata else None), loaded


def read_provenance(path: str | Path) -> dict[str, Any] | None:
    """The provenance ``save_adapter`` wrote into ``path`` (its header only); None for a file without it (an earlier
    version's). Raises ``ConfigError`` when the file is not a readable safetensors file."""
    return _read(path, tensors=False)[0]


def check_origin(origin: dict[str, Any], config: dict[str, Any], path: str | Path) -> None:
    """Raise ``ConfigError`` unless the run ``config`` builds the model ``origin`` (a file's ``read_provenance``) was
    trained on: the same task, model (its ``path`` aside), method config and seed."""
    def model(section: dict[str, Any]) -> dict[str, Any]:  # a file from before model.dtype holds no dtype: null
        return {k: v for k, v in section.items() if k != "path" and not (k == "dtype" and v is None)}

    ours, theirs = model(config["model"]), model(origin["model"])
    keys = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))
    differ = [what for what, mine, its in (
        ("task", config["task"]["name"], origin["task"]), (f"model ({', '.join(keys)})", not keys, True),
        ("method", config["method"], origin["method"]), ("seed", config["seed"], origin["seed"])) if mine != its]
    if differ:
        wrote = (f"task={origin['task']} model={origin['model']['name']} method={origin['method']['label']} "
                 f"seed={origin['seed']}")
        raise ConfigError(f"adapter file {path} was trained by another {', '.join(differ)} ({wrote}, run "
                          f"{origin['run_id']}): score it with its run's settings")


def load_adapter(model: nn.Module, path: str | Path) -> dict[str, Any] | None:
    """Load a file written by ``save_adapter`` into ``model``, which must be built and adapted the same way; returns
    the file's provenance (None for a file without it). Raises ``ConfigError`` for an unreadable or damaged file
    (its tensors' sha256) and one whose parameters do not match, naming them."""
    origin, loaded = _read(path, tensors=True)
    if origin is not None and tensors_sha256(loaded) != origin.get("tensors_sha256"):
        raise ConfigError(f"adapter file {path} is damaged: its tensors do not match the checksum it was written "
                          "with; train again (overwrite=true save_adapter=true)")
    state = trainable_state(model)
    missing, unexpected = sorted(set(state) - set(loaded)), sorted(set(loaded) - set(state))
    shapes = sorted(k for k in set(state) & set(loaded) if state[k].shape != loaded[k].shape)
    if missing or unexpected or shapes:
        raise ConfigError(f"adapter file {path} does not fit the model: missing {missing[:3]}, unexpected "
                          f"{unexpected[:3]}, other shapes {shapes[:3]}; build the model with the run's config")
    with torch.no_grad():
        for name, param in state.items():
            param.copy_(loaded[name])
    return origin
