"""The base of every method's own config dataclass: built from the Hydra ``method`` group, unknown keys refused."""

from dataclasses import fields
from typing import Self

from omegaconf import DictConfig, OmegaConf

from qgoft_bench.errors import ConfigError


class MethodConfig:
    """Mixed into a ``@dataclass`` of a method's knobs (with ``name`` and ``label``); validation in ``__post_init__``."""

    @classmethod
    def from_cfg(cls, cfg: DictConfig | dict) -> Self:
        """Known keys from the Hydra group; an unknown one (a typo in an override) is a ``ConfigError``."""
        values = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"unknown key(s) for method {values.get('name')!r}: {', '.join(unknown)}")
        return cls(**values)
