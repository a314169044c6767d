"""GOFT, GOFT* and qGOFT (Ma et al., ICML 2024); importing this package registers the three method names."""

from qgoft_bench.methods.givens.config import GivensConfig
from qgoft_bench.methods.givens.layer import GivensLayer, GOFTLayer, GOFTScaledLayer, QGOFTLayer
from qgoft_bench.methods.givens.model import GivensMethod

__all__ = [
    "GOFTLayer",
    "GOFTScaledLayer",
    "GivensConfig",
    "GivensLayer",
    "GivensMethod",
    "QGOFTLayer",
]
