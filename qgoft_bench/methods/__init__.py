"""Fine-tuning methods, one registry: name -> ``Method`` subclass (see ``base.Method`` for the interface)."""

from omegaconf import DictConfig

from qgoft_bench.methods.base import Decay, LossFn, Method, conventional_decay
from qgoft_bench.registry import Registry

METHODS: Registry = Registry("method")
register_method = METHODS.register


def build_method(cfg: DictConfig) -> Method:
    """The method named by ``cfg.name``, built from its config group."""
    return METHODS.get(cfg.name)(cfg)


__all__ = ["METHODS", "Decay", "LossFn", "Method", "build_method", "conventional_decay",
           "register_method"]

from qgoft_bench.methods import (  # noqa: F401  (registers the methods)
    childpruning,
    diffpruning,
    fact,
    givens,
    houlsby,
    lora_qv,
    magpruning,
    mixout,
    peft_backed,
    random_mask,
    sam,
    simple,
)
