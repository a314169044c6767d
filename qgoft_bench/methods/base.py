"""The one interface every fine-tuning method implements.

The trainer only ever calls these hooks, in this order:

    model = method.apply(model, spec)        # freeze what must be frozen, add adapters
    ... forward ...
    loss = task_loss + method.regularizer()  # e.g. qGOFT's soft-orthogonality penalty (None: no term)
    loss.backward()
    method.mask_gradients()                  # e.g. sparse methods zero the gradients they do not tune
    ... clip, optimizer step, schedule step ...
    method.after_step(step, total_steps)     # e.g. AdaLoRA's rank allocation (it reads the gradients, so before zero_grad)
    model = method.merge(model)              # plain weights for inference, where the method allows it

After ``apply`` the harness makes the task head trainable (``spec.head_modules``) and counts parameters itself, so a
method never counts: ``adapter_params`` is every trainable parameter outside the head.
"""

from dataclasses import dataclass, field

import torch
from omegaconf import DictConfig
from torch import nn


@dataclass
class ModelSpec:
    """What a method needs to know about the model it adapts."""

    family: str  # bert | deberta | roberta | llama | vit
    head_modules: list[str] = field(default_factory=list)  # dotted module names of the task head


class Method:
    """Base class: a method that trains nothing but the head (subclasses override what they change)."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg

    def apply(self, model: nn.Module, spec: ModelSpec) -> nn.Module:
        """Freeze and adapt ``model`` (in place or wrapped) and return the module to train."""
        model.requires_grad_(False)
        return model

    def regularizer(self) -> torch.Tensor | None:
        """A loss term added to the task loss at every step, or None."""
        return None

    def mask_gradients(self) -> None:
        """Called after ``backward`` and before clipping; zero the gradients the method does not tune."""

    def after_step(self, step: int, total_steps: int) -> None:
        """Called after each optimizer update, before the gradients are zeroed: ``step`` is the 0-based index of the
        update just taken, ``total_steps`` the number of updates the trainer plans (known only once data are loaded)."""

    def merge(self, model: nn.Module) -> nn.Module:
        """Fold adapters into plain weights for inference; methods without adapters return ``model``."""
        return model

    def extra_counts(self) -> dict[str, int]:
        """Method-specific, labelled parameter counts for the dry-run line (e.g. a paper's convention)."""
        return {}
