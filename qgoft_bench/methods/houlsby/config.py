"""Knobs of the bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2021), read from the ``method`` group."""

from dataclasses import dataclass, field

from qgoft_bench.errors import ConfigError
from qgoft_bench.methods.knobs import MethodConfig

ACTIVATIONS = ("gelu", "relu", "tanh")
PLACEMENTS = ("attention", "ffn")

# Per model family: the layers whose outputs are a block's sublayer outputs, before the residual sum. Matched with
# the target_modules rule (suffix after a dot); a layer matching an "attention" key is never an "ffn" layer, which
# is how "output.dense" (BERT-like FFN output) is told from "attention.output.dense".
SUBLAYER_OUTPUTS: dict[str, dict[str, list[str]]] = {
    "bert": {"attention": ["attention.output.dense"], "ffn": ["output.dense"]},
    "roberta": {"attention": ["attention.output.dense"], "ffn": ["output.dense"]},
    "deberta": {"attention": ["attention.output.dense"], "ffn": ["output.dense"]},
    "llama": {"attention": ["o_proj"], "ffn": ["down_proj"]},
    "vit": {"attention": ["attn.proj"], "ffn": ["mlp.fc2"]},  # timm names
}


@dataclass
class AdapterConfig(MethodConfig):
    """One config for Houlsby (attention and FFN) and Pfeiffer (FFN only) placement."""

    name: str = "houlsby_adapter"
    label: str = "houlsby_adapter"  # result tables group runs by this
    target_modules: list[str] | None = None  # None: SUBLAYER_OUTPUTS[family] per placement; else exactly these
    placement: list[str] = field(default_factory=lambda: list(PLACEMENTS))  # used when target_modules is None
    bottleneck: int = 8  # m: each adapter has 2 d m + m + d parameters (d = the layer's out_features)
    activation: str = "gelu"
    init_std: float = 1.0e-2  # std of the down projection; the up projection starts at zero (identity adapter)

    def __post_init__(self) -> None:
        if self.bottleneck < 1:
            raise ConfigError(f"method.bottleneck={self.bottleneck} must be >= 1")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"method.activation={self.activation!r}; choose one of {', '.join(ACTIVATIONS)}")
        unknown = sorted(set(self.placement) - set(PLACEMENTS))
        if unknown or not self.placement:
            raise ConfigError(f"method.placement={self.placement}; choose from {', '.join(PLACEMENTS)}")
