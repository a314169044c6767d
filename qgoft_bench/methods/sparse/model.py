"""The shared lifecycle of the sparse methods (Fu et al., AAAI 2023): every method is a choice of entries to train.

    apply    freeze the model; every parameter tensor outside the task head is a candidate (the encoder)
    prepare  score the candidates (each method's ``scores``: gradients, magnitudes, a random draw, ...), keep the
             top ceil(p * numel) entries of each tensor (or over all of them, ``method.topk=global``), and install
             them as trainable value vectors (``layer.SparseValues``): exact sparsity, whatever the optimizer does
    counts   ``adapter_params`` = entries selected (before prepare, as in a dry run: the budget they will have)
    report   after training (the best evaluation's weights), ``sparsity``: ``budget`` (entries the method may
             change) and ``changed`` (entries of the encoder that differ from the pre-trained weights, measured)
    merge    plain weights again
"""

from collections.abc import Iterable, Iterator

import torch
from omegaconf import DictConfig
from torch import nn

from qgoft_bench.errors import ConfigError
from qgoft_bench.methods.base import LossFn, Method
from qgoft_bench.methods.params import count_parameters, in_head
from qgoft_bench.methods.sparse.config import SparseConfig
from qgoft_bench.methods.sparse.layer import SparseValues, budget, install, merge, top_entries
from qgoft_bench.models import ModelSpec


class SparseMethod(Method):
    """Subclasses set ``config_class`` and implement ``scores``; everything else is shared."""

    config_class: type[SparseConfig] = SparseConfig

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        self.config = self.config_class.from_cfg(cfg)
        self.candidates: dict[str, nn.Parameter] = {}
        self.layers: dict[str, SparseValues] = {}  # parameter name -> its trainable values, after prepare

    def apply(self, model: nn.Module, spec: ModelSpec) -> nn.Module:
        model.requires_grad_(False)
        self.candidates = {n: p for n, p in model.named_parameters() if not in_head(n, spec.head_modules)}
        return model

    def prepare(self, model: nn.Module, batches: Iterable[dict], loss_fn: LossFn) -> None:
        scores = self.scores(model, batches, loss_fn)
        selected = top_entries(scores, self.config.ratio, per_tensor=self.config.topk == "tensor")
        self.layers = install(model, selected)

    def scores(self, model: nn.Module, batches: Iterable[dict], loss_fn: LossFn) -> dict[str, torch.Tensor]:
        """One score per entry of every candidate tensor (same shapes); the highest are trained."""
        raise NotImplementedError

    def counts(self, model: nn.Module, spec: ModelSpec) -> dict[str, int]:
        counts = count_parameters(model, spec.head_modules)
        if self.layers:  # the value vectors repeat entries of the frozen tensors: count the model's once
            counts["total_params"] -= sum(len(layer.idx) for layer in self.layers.values())
        else:  # not prepared yet (a dry run): the entries the budget allows
            counts["adapter_params"] = sum(budget(p.numel(), self.config.ratio) for p in self.candidates.values())
            counts["trainable_params"] = counts["adapter_params"] + counts["head_params"]
        return counts

    def report(self, model: nn.Module) -> dict:
        return {"sparsity": {"budget": sum(len(layer.idx) for layer in self.layers.values()),
                             "changed": sum(layer.changed() for layer in self.layers.values()),
                             "ratio": self.config.ratio}}

    def merge(self, model: nn.Module) -> nn.Module:
        return merge(model)


BURN_IN_FLOAT32 = "its burn-in fine-tunes the whole encoder, whose updates would round away in half precision"


def require_float32(model: nn.Module, method: str) -> None:
    """Raise ``ConfigError`` when the model's weights are not float32: a burn-in (MagPruning, DiffPruning) fine-tunes
    the encoder itself, and in half precision AdamW's updates at the burn-in rate round away (bfloat16 keeps 8 bits
    of mantissa) and float16's overflow to NaN."""
    dtypes = {p.dtype for p in model.parameters()} - {torch.float32}
    if dtypes:
        raise ConfigError(f"method {method}'s burn-in fine-tunes the whole encoder, whose weights here are "
                          f"{', '.join(sorted(str(d) for d in dtypes))}: use model.dtype=float32")


def cycle(batches: Iterable[dict], n: int) -> Iterator[dict]:
    """The first ``n`` batches of ``batches``, passing over it again (a loader reshuffles) when one pass is shorter."""
    produced = 0
    while produced < n:
        empty = True
        for batch in batches:
            empty = False
            yield batch
            produced += 1
            if produced == n:
                return
        if empty:
            return


def gradient_sums(model: nn.Module, params: dict[str, nn.Parameter], batches: Iterable[dict], loss_fn: LossFn,
                  n_batches: int, squared: bool = False) -> dict[str, torch.Tensor]:
    """Per entry of each of ``params``, float32, its shape: the sum over the first ``n_batches`` of ``batches`` of the
    task loss's gradient at the current weights (``squared``: of the squared per-batch gradient), with no update.
    Costs ``n_batches`` forward+backward passes and one in-place add per tensor and batch (the square in place too).
    The parameters are frozen again after."""
    sums = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in params.items()}
    for p in params.values():
        p.requires_grad_(True)
    try:
        for used, batch in enumerate(batches):
            if used == n_batches:
                break
            model.zero_grad(set_to_none=True)
            loss_fn(batch).backward()
            for name, p in params.items():
                if p.grad is not None:
                    grad = p.grad.float()
                    if squared:
                        sums[name].addcmul_(grad, grad)
                    else:
                        sums[name].add_(grad)
    finally:
        model.zero_grad(set_to_none=True)
        for p in params.values():
            p.requires_grad_(False)
    return sums
