"""Knobs of SAM, the Second-order Approximation Method (Fu et al., AAAI 2023)."""

from dataclasses import dataclass

from qgoft_bench.errors import ConfigError
from qgoft_bench.methods.sparse.config import SparseConfig

SCORES = ("grad_abs", "grad_sq", "grad_sq_over_h")


@dataclass
class SamConfig(SparseConfig):
    """``score``: how an entry's gradients at the pre-trained weights rank it.

    - ``grad_abs``: |sum of the per-batch gradients| (what the released code of Fu et al. ranks by);
    - ``grad_sq``: sum of the squared per-batch gradients;
    - ``grad_sq_over_h``: (sum of gradients)^2 / |h|, h the Hessian diagonal by Hutchinson's estimator (the paper's
      Theorem 3 before it replaces every h by one constant; no public code has it).
    """

    name: str = "sam"
    label: str = "sam"
    score: str = "grad_abs"
    scoring_batches: int = 600  # mini-batches of training data the gradients are summed over (the paper's 600)
    hessian_batches: int = 32  # grad_sq_over_h: mini-batches (one Rademacher probe each) for the Hessian diagonal

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.score not in SCORES:
            raise ConfigError(f"method.score={self.score!r} is not one of {', '.join(SCORES)}")
        for knob in ("scoring_batches", "hessian_batches"):
            if getattr(self, knob) < 1:
                raise ConfigError(f"method.{knob}={getattr(self, knob)} must be at least 1")
