"""The one interface every fine-tuning method implements.

A run (``qgoft_bench.train``) calls the hooks in this order and never branches on a method's name:

    model = method.apply(model, spec)           # freeze what must be frozen, add adapters (no data yet)
    # the run makes the task head trainable (spec.head_modules), unless spec.train_head is False
    method.prepare(model, batches, loss_fn)     # data-aware set-up before the first update: gradient scores,
                                                # burn-in; may change which parameters train
    counts = method.counts(model, spec)         # adapter_params etc., after prepare (the trainable set is final)
    rule = method.decay(name, param)            # per trainable parameter outside the head, when the optimizer is
                                                # built: weight decay toward "zero", the "init" value, or "none"
    for each update:
        for each micro-batch:
            loss = task_loss + method.regularizer()   # e.g. qGOFT's soft orthogonality (None: no term)
            loss.backward()
        ... clip, optimizer step, schedule step ...
        method.after_step(step, total_steps)    # e.g. AdaLoRA's rank allocation (reads the gradients, before they
                                                # are zeroed)
    record.update(method.report(model))         # after training, on the best evaluation's weights: what the
                                                # method measured (e.g. sparsity)
    model = method.merge(model)                 # plain weights for inference, where the method allows it (tests,
                                                # and users who export; runs evaluate the adapted model)
"""

from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
from omegaconf import DictConfig
from torch import nn

from qgoft_bench.methods.params import count_parameters
from qgoft_bench.models import ModelSpec

Decay = Literal["zero", "init", "none"]  # what AdamW's decoupled weight decay pulls a parameter toward
LossFn = Callable[[dict], torch.Tensor]  # a batch -> the task loss of the model on it (forward included)


def conventional_decay(param: nn.Parameter) -> Decay:
    """The usual weight-decay convention: matrices toward zero; biases, norm gains and other vectors not at all."""
    return "zero" if param.ndim >= 2 else "none"


class Method:
    """Base class: a method that trains nothing but the head (subclasses override what they change)."""

    # why the method cannot run on weights loaded in half precision (``model.dtype``), or None: the pre-flight check
    # refuses the combination with this reason before any job starts
    needs_float32: str | None = None
    # why the method's build reads the frozen weights (a meta-device model has none), or None: the pre-flight's meta
    # build (``train.preflight.check_build``) skips such a method, and ``apply`` refuses a meta model with this reason
    needs_weights: str | None = None

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg

    def apply(self, model: nn.Module, spec: ModelSpec) -> nn.Module:
        """Freeze and adapt ``model`` (in place or wrapped) and return the module to train."""
        model.requires_grad_(False)
        return model

    def prepare(self, model: nn.Module, batches: Iterable[dict], loss_fn: LossFn) -> None:
        """Before the first update: look at training ``batches`` (their own seeded order, not the training order)
        through ``loss_fn``; nothing for most methods. The optimizer is built afterwards, from what trains then."""

    def counts(self, model: nn.Module, spec: ModelSpec) -> dict[str, int]:
        """Parameter counts for the record and the dry-run line: ``adapter_params`` (what the method trains, head
        excluded), ``head_params``, ``trainable_params``, ``total_params`` and any labelled extra counts. Override
        where the trainable set is not simply every parameter with ``requires_grad``."""
        return count_parameters(model, spec.head_modules)

    def decay(self, name: str, param: nn.Parameter) -> Decay:
        """What weight decay pulls the trainable ``param`` (outside the head) toward; by default
        ``conventional_decay``. Multiplicative adapters that start at the identity override this."""
        return conventional_decay(param)

    def regularizer(self) -> torch.Tensor | None:
        """A loss term added to the task loss once per update, or None."""
        return None

    def after_step(self, step: int, total_steps: int) -> None:
        """Called after each optimizer update, before the gradients are zeroed: ``step`` is the 0-based index of the
        update just taken, ``total_steps`` the number of updates the trainer plans (known only once data are loaded)."""

    def state_dict(self) -> dict[str, Any]:
        """What the method keeps outside the model's parameters and changes while training (e.g. AdaLoRA's
        importance averages), for a checkpoint; nothing by default."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned, into a method built and applied the same way."""

    def report(self, model: nn.Module) -> dict[str, Any]:
        """After training: entries for the run's record (e.g. sparse methods' ``sparsity``); none by default."""
        return {}

    def merge(self, model: nn.Module) -> nn.Module:
        """Fold adapters into plain weights for inference; methods without adapters return ``model``."""
        return model
