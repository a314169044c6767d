"""FacT-TT and FacT-TK (Jie & Deng, AAAI 2023; ours: PEFT 0.21.2 has no FacT); importing this package registers
``fact_tt`` and ``fact_tk``."""

from qgoft_bench.methods.fact.config import FACT_TARGETS, VTAB_RANK_SCALE, FacTConfig
from qgoft_bench.methods.fact.layer import FacTFactors, FacTLayer
from qgoft_bench.methods.fact.model import FacTMethod

__all__ = ["FACT_TARGETS", "VTAB_RANK_SCALE", "FacTConfig", "FacTFactors", "FacTLayer", "FacTMethod"]
