"""ChildPruning (Fu et al., AAAI 2023, after ChildTuning-D of Xu et al., EMNLP 2021): train the entries with the most
Fisher information about the task, estimated from the training data at the pre-trained weights.

The Fisher diagonal is the sum of squared mini-batch gradients over one pass of the training data
(``method.fisher_batches`` caps it); the top ceil(p * numel) entries of each tensor train (``method.topk=global``
for one threshold over all tensors, as ChildTuning-D's percentile does). Fu et al.'s released code has no method of
this name; its closest switch scores ~600 clipped mini-batches the same way.
"""

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from qgoft_bench.errors import ConfigError
from qgoft_bench.methods import register_method
from qgoft_bench.methods.base import LossFn
from qgoft_bench.methods.sparse.config import SparseConfig
from qgoft_bench.methods.sparse.model import SparseMethod, gradient_sums


@dataclass
class ChildPruningConfig(SparseConfig):
    name: str = "childpruning"
    label: str = "childpruning"
    fisher_batches: int | None = None  # None: one whole pass over the training data

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.fisher_batches is not None and self.fisher_batches < 1:
            raise ConfigError(f"method.fisher_batches={self.fisher_batches} must be at least 1, or null")


@register_method("childpruning")
class ChildPruning(SparseMethod):
    config_class = ChildPruningConfig

    def scores(self, model: nn.Module, batches: Iterable[dict], loss_fn: LossFn) -> dict[str, torch.Tensor]:
        """The empirical Fisher information's diagonal, sum of squared per-batch gradients over the training data
        (``method.fisher_batches`` batches, or one pass)."""
        limit = self.config.fisher_batches or len(batches)  # a loader knows its length: one pass
        return gradient_sums(model, self.candidates, batches, loss_fn, limit, squared=True)
