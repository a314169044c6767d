"""Knobs of FacT (Jie & Deng, AAAI 2023), read from the Hydra ``method`` group, and the paper's released settings."""

from dataclasses import dataclass

from qgoft_bench.errors import ConfigError
from qgoft_bench.methods.knobs import MethodConfig

FORMS = ("tt", "tk")  # tensor-train and Tucker, the two factorisations of the paper

# Per model family: the layers FacT adapts, every linear of a block (the paper: q, k, v, o, fc1, fc2 on ViT; timm
# fuses q, k and v into attn.qkv, three d x d slices). Matched with the target_modules rule (suffix after a dot).
FACT_TARGETS: dict[str, list[str]] = {
    "vit": ["attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"],
    "deberta": ["query_proj", "key_proj", "value_proj", "attention.output.dense", "intermediate.dense",
                "output.dense"],
    "bert": ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"],
    "roberta": ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj"],  # the qGOFT paper's LLaMA targets; all d x d
}

# The authors' released per-task settings for VTAB-1k (github.com/JieShibo/PETL-ViT, FacT/configs/{tt,tk}/*.yaml):
# rank and scale s. The papers' VTAB budgets are the mean adapter count over the 19 tasks at these ranks.
VTAB_RANK_SCALE: dict[str, dict[str, tuple[int, float]]] = {
    "tt": {
        "cifar": (8, 1.0), "caltech101": (16, 10.0), "dtd": (8, 0.01), "oxford_flowers102": (16, 1.0),
        "oxford_iiit_pet": (8, 1.0), "svhn": (16, 100.0), "sun397": (8, 1.0), "patch_camelyon": (8, 10.0),
        "eurosat": (8, 100.0), "resisc45": (8, 0.1), "diabetic_retinopathy": (8, 1.0), "clevr_count": (16, 1.0),
        "clevr_dist": (4, 10.0), "dmlab": (16, 10.0), "kitti": (16, 10.0), "dsprites_loc": (16, 100.0),
        "dsprites_ori": (16, 1.0), "smallnorb_azi": (16, 100.0), "smallnorb_ele": (8, 10.0),
    },
    "tk": {
        "cifar": (32, 0.1), "caltech101": (32, 10.0), "dtd": (16, 0.01), "oxford_flowers102": (32, 1.0),
        "oxford_iiit_pet": (16, 10.0), "svhn": (32, 100.0), "sun397": (16, 1.0), "patch_camelyon": (32, 10.0),
        "eurosat": (32, 100.0), "resisc45": (32, 10.0), "diabetic_retinopathy": (16, 1.0), "clevr_count": (32, 10.0),
        "clevr_dist": (16, 10.0), "dmlab": (32, 10.0), "kitti": (32, 10.0), "dsprites_loc": (32, 100.0),
        "dsprites_ori": (32, 1.0), "smallnorb_azi": (32, 100.0), "smallnorb_ele": (16, 10.0),
    },
}


@dataclass
class FacTConfig(MethodConfig):
    """One config for FacT-TT and FacT-TK; ``name`` picks the form."""

    name: str = "fact_tt"  # fact_tt | fact_tk
    label: str = "fact_tt_r16"  # result tables group runs by this
    target_modules: list[str] | None = None  # None: FACT_TARGETS[family]; else exactly these linears
    r: int = 16  # the rank of every factor (TT: U, V and the r x r cores; TK: also the r x r x r core and P)
    scale: float = 1.0  # s: the update is s * (factorised delta); FacT picks it per task from 0.01 .. 100
    dropout: float = 0.1  # on the r-dimensional features before V, as the authors' code
    width: int | None = None  # d, the slice width; None: the gcd of the targets' in and out features (the model width)

    def __post_init__(self) -> None:
        if self.name not in ("fact_tt", "fact_tk"):
            raise ConfigError(f"method.name={self.name!r}; FacT is fact_tt or fact_tk")
        if not (isinstance(self.r, int) and self.r >= 1):
            raise ConfigError(f"method.r={self.r!r} must be an integer >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"method.dropout={self.dropout} must be in [0, 1)")
        if self.width is not None and self.width < 1:
            raise ConfigError(f"method.width={self.width} must be >= 1 (or null: the model width)")

    @property
    def form(self) -> str:
        """``tt`` or ``tk``."""
        return self.name.removeprefix("fact_")
