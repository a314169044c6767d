"""Knobs every sparse method shares (Fu et al., AAAI 2023), read from the Hydra ``method`` group."""

from dataclasses import dataclass

from qgoft_bench.errors import ConfigError
from qgoft_bench.methods.knobs import MethodConfig

TOPK = ("tensor", "global")


@dataclass
class SparseConfig(MethodConfig):
    """``ratio`` is the budget p: each encoder tensor may change ceil(p * numel) entries (Fu et al.: p = 0.5%); the
    task head always trains in full. ``topk``: choose per tensor (the paper) or over all tensors together."""

    name: str = "sparse"
    label: str = "sparse"
    ratio: float = 0.005
    topk: str = "tensor"

    def __post_init__(self) -> None:
        if not 0 < self.ratio <= 1:
            raise ConfigError(f"method.ratio={self.ratio} must be in (0, 1]")
        if self.topk not in TOPK:
            raise ConfigError(f"method.topk={self.topk!r} is not one of {', '.join(TOPK)}")
