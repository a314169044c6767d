"""SAM (Fu et al., AAAI 2023): train the entries whose first- (and second-) order terms promise the largest loss
decrease at the pre-trained weights.

Fu et al.'s Theorem 3 ranks entry i by g_i^2 / h_i (g the gradient, h the Hessian diagonal) and then, taking every
h_i to be the same constant, by g_i^2; their released code ranks by |sum of mini-batch gradients|. All three are
``method.score`` options. The gradients come from ``scoring_batches`` training mini-batches at the pre-trained
weights, with no update in between.
"""

from collections.abc import Iterable

import torch
from torch import nn

from qgoft_bench.methods import register_method
from qgoft_bench.methods.base import LossFn
from qgoft_bench.methods.sam.config import SamConfig
from qgoft_bench.methods.sparse.model import SparseMethod, cycle, gradient_sums

EPS = 1e-12


@register_method("sam")
class SAM(SparseMethod):
    config_class = SamConfig

    def scores(self, model: nn.Module, batches: Iterable[dict], loss_fn: LossFn) -> dict[str, torch.Tensor]:
        """``method.score`` over ``method.scoring_batches`` mini-batches at the pre-trained weights (no update):
        grad_abs |sum g| (the released code), grad_sq sum of g^2, or grad_sq_over_h (sum g)^2 / |h| with h a
        Hutchinson estimate of the Hessian diagonal (Fu et al., Theorem 3); one tensor per candidate, its shape."""
        scoring = cycle(batches, self.config.scoring_batches)
        squared = self.config.score == "grad_sq"  # only grad_sq needs the per-batch squares; the others the sum
        sums = gradient_sums(model, self.candidates, scoring, loss_fn, self.config.scoring_batches, squared)
        if self.config.score == "grad_abs":
            return {name: g.abs_() for name, g in sums.items()}
        if squared:
            return sums
        probing = cycle(batches, self.config.hessian_batches)
        hessian = hutchinson_diagonal(model, self.candidates, probing, loss_fn)
        return {name: sums[name].square() / hessian[name].abs().clamp_min(EPS) for name in sums}


def hutchinson_diagonal(model: nn.Module, params: dict[str, nn.Parameter], batches: Iterable[dict],
                        loss_fn: LossFn) -> dict[str, torch.Tensor]:
    """Hutchinson's estimate of the Hessian diagonal of the loss, diag(H) ~ mean over probes of z * (H z) with z a
    Rademacher vector (Bekas et al. 2007), one probe per batch; H z by double backpropagation."""
    for p in params.values():
        p.requires_grad_(True)
    estimate = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in params.items()}
    probes = 0
    try:
        for batch in batches:
            names = list(params)
            grads = torch.autograd.grad(loss_fn(batch), [params[n] for n in names], create_graph=True,
                                        allow_unused=True)
            used = [(n, g) for n, g in zip(names, grads, strict=True) if g is not None]
            z = {n: torch.randint_like(g, 2) * 2 - 1 for n, g in used}
            dot = sum((g * z[n]).sum() for n, g in used)
            hz = torch.autograd.grad(dot, [params[n] for n, _ in used], allow_unused=True)
            for (n, _), hv in zip(used, hz, strict=True):
                if hv is not None:
                    estimate[n] += (z[n] * hv).float()
            probes += 1
    finally:
        for p in params.values():
            p.requires_grad_(False)
    return {name: value / max(probes, 1) for name, value in estimate.items()}
