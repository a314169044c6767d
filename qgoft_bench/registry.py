"""A small name -> builder registry, in the style of timm's ``register_model``.

Methods, models and tasks each keep one registry; the trainer looks builders up by the name in the config and
never branches on it.
"""

from collections.abc import Callable
from typing import Generic, TypeVar

from qgoft_bench.errors import ConfigError

T = TypeVar("T", bound=Callable)


class Registry(Generic[T]):
    """Maps names to builders; ``@registry.register("name")`` adds one."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, *names: str) -> Callable[[T], T]:
        """A decorator that adds the builder under each of ``names``; ``ValueError`` for a name taken already."""

        def add(builder: T) -> T:
            for name in names:
                if name in self._entries:
                    raise ValueError(f"{self.kind} {name!r} is registered twice")
                self._entries[name] = builder
            return builder

        return add

    def get(self, name: str) -> T:
        """The builder registered as ``name``; ``ConfigError`` naming the known ones otherwise."""
        if name not in self._entries:
            raise ConfigError(f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._entries))}")
        return self._entries[name]
