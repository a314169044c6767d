"""LoRA on chosen parts of a fused projection (``lora_qv``: q and v inside timm's attn.qkv, the VTAB LoRA row)."""

from qgoft_bench.methods.lora_qv.config import FusedLoRAConfig
from qgoft_bench.methods.lora_qv.layer import FusedLoRALayer
from qgoft_bench.methods.lora_qv.model import FusedLoRAMethod

__all__ = ["FusedLoRAConfig", "FusedLoRALayer", "FusedLoRAMethod"]
