"""Finding the layers a method adapts, with the same matching rule as PEFT's ``target_modules`` list.

A module matches a target key when its dotted name equals the key or ends with ``"." + key``; so ``output.dense``
matches both ``attention.output.dense`` and ``layer.3.output.dense`` but not ``pooler.dense``.
"""

from collections.abc import Iterable

from torch import nn

from qgoft_bench.errors import ConfigError


def matches(name: str, targets: Iterable[str]) -> bool:
    """True when the dotted module ``name`` is selected by any key in ``targets``."""
    return any(name == key or name.endswith("." + key) for key in targets)


def find_targets(model: nn.Module, targets: Iterable[str], kinds: tuple[type, ...]) -> list[tuple[str, nn.Module]]:
    """All (name, module) of the given module types whose name matches ``targets``; error when none does."""
    targets = list(targets)
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, kinds) and matches(n, targets)]
    if not found:
        raise ConfigError(
            f"method.target_modules={targets} matches no {'/'.join(k.__name__ for k in kinds)} layer of the model; "
            "set method.target_modules to names of its linear layers"
        )
    return found


def set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule at dotted path ``name`` by ``new``."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def to_linears(model: nn.Module, layer_type: type[nn.Module]) -> nn.Module:
    """Replace every ``layer_type`` module of ``model`` by its ``to_linear()`` (a merged plain layer); returns
    ``model``. What the merge of a method with its own adapter layer does."""
    for name, module in list(model.named_modules()):
        if isinstance(module, layer_type):
            set_submodule(model, name, module.to_linear())
    return model
