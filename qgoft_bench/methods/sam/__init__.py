"""SAM, the Second-order Approximation Method (Fu et al., AAAI 2023); importing registers ``sam``."""

from qgoft_bench.methods.sam.config import SamConfig
from qgoft_bench.methods.sam.model import SAM, hutchinson_diagonal

__all__ = ["SAM", "SamConfig", "hutchinson_diagonal"]
