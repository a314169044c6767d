"""Knobs of LoRA on chosen parts of a fused projection (timm's attn.qkv), read from the Hydra ``method`` group."""

from dataclasses import dataclass, field

from qgoft_bench.errors import ConfigError
from qgoft_bench.methods.knobs import MethodConfig


@dataclass
class FusedLoRAConfig(MethodConfig):
    """LoRA of rank ``r`` on the ``parts`` of each target's output, which is ``fused_order`` stacked equal blocks."""

    name: str = "lora_qv"
    label: str = "lora_qv_r8"  # the VTAB table's LoRA row
    target_modules: list[str] = field(default_factory=lambda: ["attn.qkv"])
    fused_order: list[str] = field(default_factory=lambda: ["q", "k", "v"])  # timm: qkv = cat(q, k, v) on outputs
    parts: list[str] = field(default_factory=lambda: ["q", "v"])
    r: int = 8
    lora_alpha: float = 16.0  # the update is (lora_alpha / r) B A, PEFT's convention
    lora_dropout: float = 0.0

    def __post_init__(self) -> None:
        if not (isinstance(self.r, int) and self.r >= 1):
            raise ConfigError(f"method.r={self.r!r} must be an integer >= 1")
        unknown = [p for p in self.parts if p not in self.fused_order]
        if unknown or not self.parts or len(set(self.parts)) != len(self.parts):
            raise ConfigError(f"method.parts={self.parts}: choose distinct parts of {self.fused_order}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f"method.lora_dropout={self.lora_dropout} must be in [0, 1)")
