"""Random (Fu et al., AAAI 2023): p of each encoder tensor's entries drawn at random, fixed before training."""

from collections.abc import Iterable

import torch
from torch import nn

from qgoft_bench.methods import register_method
from qgoft_bench.methods.base import LossFn
from qgoft_bench.methods.sparse.model import SparseMethod


@register_method("random_mask")
class RandomMask(SparseMethod):
    """Scores are uniform random numbers, so the top ceil(p * numel) of a tensor is a uniform random subset of it.
    They are drawn from the global RNG, which the run seeds: the subset depends on ``seed``."""

    def scores(self, model: nn.Module, batches: Iterable[dict], loss_fn: LossFn) -> dict[str, torch.Tensor]:
        """Uniform random scores: the top ones are a uniformly random subset of the budget's size."""
        return {name: torch.rand(p.shape, device=p.device) for name, p in self.candidates.items()}
