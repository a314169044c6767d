"""Composing the Hydra config outside the CLI (tests, benchmarks, notebooks) and checking overrides early."""

from importlib import resources

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

CONFIG_MODULE = "qgoft_bench.conf"
GROUPS = ("task", "model", "method", "trainer", "tracker", "experiment")


def compose_config(overrides: list[str] | None = None) -> DictConfig:
    """The resolved-on-access config for ``overrides`` (the same strings as on the command line)."""
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides or []))


def group_options(group: str) -> list[str]:
    """Every option of a config group, nested ones as ``glue/sst2``."""
    root = resources.files(CONFIG_MODULE).joinpath(*group.split("/"))
    found: list[str] = []

    def walk(folder, prefix: str) -> None:
        for entry in folder.iterdir():
            if entry.name.endswith(".yaml"):
                found.append(prefix + entry.name[: -len(".yaml")])
            elif entry.is_dir() and not entry.name.startswith("__"):
                walk(entry, f"{prefix}{entry.name}/")

    walk(root, "")
    return sorted(found)
