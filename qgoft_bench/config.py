"""The config: composing it outside the CLI, its typed schema, and the jobs of a sweep.

Recipes look values up in a table (``conf/recipe/<name>.csv``) through the ``recipe`` resolver:
``${recipe:glue_deberta_v3_base,lr}`` is the ``lr`` cell of the row for this job's ``task.name`` and
``method.label``, so a paper's per-(task, method) settings live in one data file, not in a YAML file per cell.

The trainer group is a typed structured config (``TrainerConfig``, registered with Hydra's ConfigStore as
``schema/trainer`` and extended by ``conf/trainer/default.yaml``): Hydra itself rejects a value of the wrong type
(``trainer.lr=abc``) or a key the schema lacks (``+trainer.lrr=1e-3``) when it composes, and ``TrainerConfig``'s
own checks (ranges, choices) run when a job is validated (``qgoft_bench.train.preflight``).
"""

import csv
import math
from dataclasses import dataclass
from functools import cache
from importlib import resources
from itertools import product
from typing import Any

from hydra import compose, initialize_config_module
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from qgoft_bench.errors import ConfigError

CONFIG_MODULE = "qgoft_bench.conf"
GROUPS = ("task", "model", "method", "trainer", "tracker", "experiment")
SCHEDULES = ("linear", "cosine", "constant")
PRECISIONS = ("auto", "bf16", "fp32")
# sparse_budget.<key>: a recipe's (or +sparse_budget.<key>=N's) cap on the sparse methods' data-aware set-up, which
# conf/method/{sam,childpruning,magpruning,diffpruning}.yaml read, so that one value holds for a sweep over methods
SPARSE_BUDGET_KEYS = ("scoring_batches", "fisher_batches", "burn_in_steps")


@dataclass
class TrainerConfig:
    """The training loop's knobs (``conf/trainer/default.yaml`` holds the defaults and one-line help)."""

    max_epochs: int = 3
    max_steps: int = -1
    lr: float = 5.0e-4
    head_lr: float | None = None
    weight_decay: float = 0.0
    batch_size: int = 32
    eval_batch_size: int = 64
    grad_accum: int = 1
    warmup_steps: int = 0
    warmup_ratio: float = 0.06
    schedule: str = "linear"
    min_lr_ratio: float = 0.0
    clip_grad: float | None = 1.0
    max_seq_len: int = 128
    eval_every: int = 1
    eval_every_steps: int = 0
    patience: int | None = None
    min_steps: int = 0
    precision: str = "auto"
    compile: bool = False
    device: str = "auto"
    num_workers: int = 0
    progress: bool = True
    checkpoint_every: int = 500

    def __post_init__(self) -> None:
        at_least_1 = ("max_epochs", "batch_size", "eval_batch_size", "grad_accum", "max_seq_len", "eval_every")
        for name in at_least_1:
            if getattr(self, name) < 1:
                raise ConfigError(f"trainer.{name}={getattr(self, name)} must be at least 1")
        if self.clip_grad is not None and not self.clip_grad > 0:
            raise ConfigError(f"trainer.clip_grad={self.clip_grad} must be positive, or null for no clipping")
        if self.patience is not None and self.patience < 1:
            raise ConfigError(f"trainer.patience={self.patience} must be at least 1, or null for no early stopping")
        for name in ("lr", "head_lr", "weight_decay", "warmup_steps", "num_workers", "eval_every_steps", "min_steps",
                     "checkpoint_every"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < math.inf:  # lr 0 is legal: evaluate a model as it is
                raise ConfigError(f"trainer.{name}={value} must be a finite number >= 0")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ConfigError(f"trainer.max_steps={self.max_steps}: set a number of updates >= 1, or -1 to train "
                              "for trainer.max_epochs")
        for name in ("warmup_ratio", "min_lr_ratio"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"trainer.{name}={getattr(self, name)} must be in [0, 1)")
        for name, choices in (("schedule", SCHEDULES), ("precision", PRECISIONS)):
            if getattr(self, name) not in choices:
                raise ConfigError(f"trainer.{name}={getattr(self, name)!r} is not one of {', '.join(choices)}")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ConfigError(f"trainer.device={self.device!r} is not one of auto, cpu, cuda, cuda:N")


ConfigStore.instance().store(group="schema", name="trainer", node=TrainerConfig)


RECIPE_COLUMNS = {"epochs": int, "lr": float, "lambda": float, "max_seq_len": int, "warmup_steps": int,
                  "warmup_ratio": float, "weight_decay": float, "classifier_dropout": float}  # the rest stay text


@cache
def recipe_table(name: str) -> dict[tuple[str, str], dict[str, str]]:
    """``conf/recipe/<name>.csv`` (``#`` lines are comments) as {(task, method label): row}."""
    text = resources.files(CONFIG_MODULE).joinpath("recipe", f"{name}.csv").read_text()
    rows = csv.DictReader(line for line in text.splitlines() if line.strip() and not line.startswith("#"))
    return {(row["task"], row["method"]): row for row in rows}


def recipe_value(name: str, column: str, *, _root_: DictConfig) -> Any:
    """The ``recipe`` resolver: ``column`` of recipe ``name`` for the job's ``task.name`` and ``method.label`` (a
    row whose task is ``*`` serves every task of its method), typed by ``RECIPE_COLUMNS``; an empty cell is None.
    Raises ``KeyError`` (the config then does not resolve: one line before any job) for a task or method the recipe
    has no row for."""
    table = recipe_table(name)
    key = (_root_.task.name, _root_.method.label)
    if key not in table and ("*", key[1]) in table:
        key = ("*", key[1])
    if key not in table:
        methods = sorted({m for t, m in table if t == key[0]}) or sorted({m for _, m in table})
        raise KeyError(f"recipe {name} has no row for task {key[0]} and method {key[1]} (its methods: "
                       f"{', '.join(methods)}; its tasks: {', '.join(sorted({t for t, _ in table}))})")
    cell = table[key][column].strip()
    return RECIPE_COLUMNS.get(column, str)(cell) if cell else None


def label_part(prefix: str, value: Any) -> str:
    """The ``label_part`` resolver: ``prefix`` + ``value`` for a method label, or nothing when ``value`` is null (a knob
    left at the library's default names no part of the label)."""
    return "" if value is None else f"{prefix}{value}"


if not OmegaConf.has_resolver("recipe"):
    OmegaConf.register_new_resolver("recipe", recipe_value)
if not OmegaConf.has_resolver("label_part"):
    OmegaConf.register_new_resolver("label_part", label_part)


def check_sparse_budget(budget: object) -> None:
    """Raise ``ConfigError`` for a ``sparse_budget`` key no method reads (a misspelling would change nothing)."""
    for key in budget or {}:
        if key not in SPARSE_BUDGET_KEYS:
            raise ConfigError(f"sparse_budget.{key} is read by no method: the keys are {', '.join(SPARSE_BUDGET_KEYS)}")


def check_seed(seed: object) -> None:
    """Raise ``ConfigError`` unless ``seed`` is an integer every RNG takes (numpy's range, 0 .. 2^32 - 1)."""
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        raise ConfigError(f"seed={seed!r} must be an integer from 0 to 2**32 - 1")


def compose_config(overrides: list[str] | None = None, hydra_config: bool = False) -> DictConfig:
    """The resolved-on-access config for ``overrides`` (the same strings as on the command line)."""
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides or []), return_hydra_config=hydra_config)


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


def sparse_budget_hint(name: str) -> str:
    """How to set the sparse methods' set-up budget ``name`` (``SPARSE_BUDGET_KEYS``) in a sweep over methods."""
    return f"or, in a sweep over methods some of which lack it, cap it for those that read it with +sparse_budget.{name}=N"


def _has_key(option: str, group: str, override: str) -> bool:
    """Whether ``override`` (``method.block_size=4``) applies to ``group=option``."""
    try:
        compose_config([f"{group}={option}", override])
    except (HydraException, OmegaConfBaseException):
        return False
    return True


def sweep_jobs(overrides: list[str], multirun: bool) -> list[list[str]]:
    """The override list of every job Hydra will launch, in its order: one job without ``-m``; with it, the
    cartesian product of the sweeps on the command line and in the config's ``hydra.sweeper.params`` (as Hydra's
    basic sweeper expands them)."""
    parser = OverridesParser.create()
    if not multirun:
        return [overrides]
    parsed = parser.parse_overrides(overrides)
    fixed = [o for o in parsed if not o.is_sweep_override()]
    try:
        params = compose_config([o.input_line for o in fixed], hydra_config=True).hydra.sweeper.params or {}
    except (HydraException, OmegaConfBaseException) as err:
        # Hydra composes what a sweep's jobs share with a swept group at its default (method: lora); a key inside
        # that group which the default lacks fails there, whatever the swept options have
        swept = {o.key_or_group: list(o.sweep_string_iterator()) for o in parsed if o.is_sweep_override()}
        for override in fixed:
            group = override.key_or_group.partition(".")[0]
            if group in swept and "." in override.key_or_group and override.key_or_group in str(err):
                having = [option for option in swept[group] if _has_key(option, group, override.input_line)]
                if having:  # else a key no option has (a typo): Hydra's own message says so
                    name = override.key_or_group.rpartition(".")[2]
                    other = sparse_budget_hint(name) if name in SPARSE_BUDGET_KEYS else "or use a preset that sets it"
                    raise ConfigError(
                        f"{override.input_line} sets a key inside {group}, which this command sweeps: Hydra first "
                        f"composes the sweep with {group}'s default, which has no such key (of the swept options, "
                        f"{', '.join(having)} have it); sweep those in a command of their own each ({group}="
                        f"{having[0]} {override.input_line}), {other}") from None
        raise
    swept = parser.parse_overrides([f"{key}={value}" for key, value in params.items()] + overrides)
    axes: dict[str, list[str]] = {}
    for override in swept:  # a later override of the same key replaces an earlier one, as in Hydra
        key = override.get_key_element()
        values = list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.get_value_element_as_str()]
        axes[key] = [f"{key}={value}" for value in values]
    return [list(job) for job in product(*axes.values())]
