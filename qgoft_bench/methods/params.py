"""Parameter counts as the papers report them: adapter parameters exclude the task head."""

from torch import nn


def in_head(param_name: str, head_modules: list[str]) -> bool:
    """True when the dotted ``param_name`` lies inside one of ``head_modules`` (also under a wrapper's prefix,
    e.g. PEFT's ``base_model.model.classifier.weight`` is inside ``classifier``)."""
    padded = f".{param_name}."
    return any(f".{head}." in padded for head in head_modules)


def count_parameters(model: nn.Module, head_modules: list[str]) -> dict[str, int]:
    """``adapter_params`` (trainable, outside the head), ``head_params`` (trainable, in the head),
    ``trainable_params`` and ``total_params`` (every parameter once)."""
    adapter = head = total = 0
    for name, param in model.named_parameters():
        total += param.numel()
        if param.requires_grad:
            if in_head(name, head_modules):
                head += param.numel()
            else:
                adapter += param.numel()
    return {"adapter_params": adapter, "head_params": head, "trainable_params": adapter + head, "total_params": total}
