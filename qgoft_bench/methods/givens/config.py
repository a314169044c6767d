"""Knobs of the Givens methods (GOFT, GOFT*, qGOFT), read from the Hydra ``method`` group."""

from dataclasses import dataclass, field

from qgoft_bench.errors import ConfigError
from qgoft_bench.methods.knobs import MethodConfig

PARAMETRIZATIONS = ("tanh", "angle")
DECAYS = ("init", "zero", "none")


@dataclass
class GivensConfig(MethodConfig):
    """One config for the three methods; ``name`` picks the layer kind."""

    name: str = "goft"  # goft | goft_scaled | qgoft
    label: str = "goft"  # result tables group runs by this
    target_modules: list[str] = field(default_factory=list)  # PEFT-style suffix match on module names
    parametrization: str = (
        "tanh"  # GOFT angles: tanh -> theta = pi * tanh(p) (official code); angle -> theta = p
    )
    reg_lambda: float = 1.0e-3  # qGOFT soft-orthogonality weight lambda; unused by GOFT
    # What AdamW's weight decay pulls the adapter toward: init (its identity start: GOFT angles 0, GOFT* scales 1,
    # qGOFT blocks I) | zero (plain AdamW; pulls qGOFT's blocks toward the zero matrix) | none
    decay_to: str = "init"

    def __post_init__(self) -> None:
        if self.parametrization not in PARAMETRIZATIONS:
            raise ConfigError(
                f"method.parametrization={self.parametrization!r}; choose one of {', '.join(PARAMETRIZATIONS)}"
            )
        if self.decay_to not in DECAYS:
            raise ConfigError(f"method.decay_to={self.decay_to!r}; choose one of {', '.join(DECAYS)}")
        if self.reg_lambda < 0:
            raise ConfigError(f"method.reg_lambda={self.reg_lambda} must be >= 0")
