"""The base of every method's own config dataclass: built from the Hydra ``method`` group, unknown keys refused and
every value checked against its field's type (``method.ratio=abc`` is one line, not a ``TypeError`` later)."""

from dataclasses import fields
from types import NoneType, UnionType
from typing import Any, Self, get_args, get_origin, get_type_hints

from omegaconf import DictConfig, OmegaConf

from qgoft_bench.errors import ConfigError

NAMES = {float: "a number", int: "an integer", bool: "true or false", str: "a string", NoneType: "null"}


def fits(value: Any, kind: Any) -> bool:
    """Whether ``value`` (as OmegaConf parsed it) is of the field type ``kind``: float takes ints too, and no number
    field takes a bool; ``X | None`` and ``list[X]`` are looked into; any other type is the method's to check."""
    if kind in (float, int):
        return isinstance(value, int | float if kind is float else int) and not isinstance(value, bool)
    if kind in NAMES:
        return isinstance(value, kind)
    if get_origin(kind) is UnionType:
        return any(fits(value, arg) for arg in get_args(kind))
    if get_origin(kind) is list:
        return isinstance(value, list) and all(fits(item, get_args(kind)[0]) for item in value)
    return True


def describe(kind: Any) -> str:
    """``kind`` in words: "an integer or null", "a list, each a string"."""
    if get_origin(kind) is UnionType:
        return " or ".join(describe(arg) for arg in get_args(kind))
    if get_origin(kind) is list:
        return f"a list, each {describe(get_args(kind)[0])}"
    return NAMES.get(kind, str(kind))


class MethodConfig:
    """Mixed into a ``@dataclass`` of a method's knobs (with ``name`` and ``label``); validation in ``__post_init__``."""

    @classmethod
    def from_cfg(cls, cfg: DictConfig | dict) -> Self:
        """Known keys from the Hydra group; an unknown key (a typo in an override) or a value not of its field's type
        is a ``ConfigError``."""
        values = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"unknown key(s) for method {values.get('name')!r}: {', '.join(unknown)}")
        hints = get_type_hints(cls)
        for key, value in values.items():
            if not fits(value, hints[key]):
                shown = "null" if value is None else str(value).lower() if isinstance(value, bool) else repr(value)
                raise ConfigError(f"method.{key}={shown} must be {describe(hints[key])}")
        return cls(**values)
