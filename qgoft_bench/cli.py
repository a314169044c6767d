"""Command-line entry points: ``qgoft-bench`` (the Hydra app) and ``qgoft-bench-tables``.

Bad input never ends in a traceback: group options and overrides are checked before Hydra starts, and the
harness's own errors (``QgoftError``) print as one line. In a sweep (``-m``) a failed run writes a failed record
and the sweep goes on; the command then exits non-zero.
"""

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from qgoft_bench.config import GROUPS, compose_config, group_options
from qgoft_bench.errors import ConfigError, QgoftError

log = logging.getLogger("qgoft_bench")
_failed_runs: list[str] = []


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def check_overrides(args: list[str]) -> None:
    """Raise ConfigError (one line) for an unknown group option or an override the config rejects."""
    overrides = [a for a in args if "=" in a and not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as err:
        raise ConfigError(f"cannot parse the overrides: {_one_line(err)}") from None
    first_values = []
    for override in parsed:
        key = override.key_or_group
        values = list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.value()]
        if key in GROUPS and not override.is_delete():
            valid = group_options(key)
            for value in values:
                if value is not None and str(value) not in valid and not (key == "experiment" and value == "null"):
                    raise ConfigError(f"unknown {key} {value!r}; valid options: {', '.join(valid)}")
        if not key.startswith("hydra"):
            first_values.append(f"{override.get_key_element()}={values[0] if values[0] is not None else 'null'}")
    try:
        compose_config(first_values)
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(f"bad override: {_one_line(err)}") from None


@hydra.main(config_path="pkg://qgoft_bench.conf", config_name="config", version_base="1.3")
def _run(cfg: DictConfig) -> None:
    from qgoft_bench.train import run_experiment  # heavy imports only once the config is known to be good

    sweeping = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        run_experiment(cfg)
    except QgoftError as err:
        if not sweeping:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(1)
        log.error("run failed: %s", err)
        _failed_runs.append(str(err))
    except Exception:
        if not sweeping:
            raise  # a bug, not bad input: the traceback is what its reader needs
        log.exception("run failed; its record says why, the sweep goes on")
        _failed_runs.append("unexpected error")


def main() -> None:
    """``qgoft-bench [overrides]``: one run, or a sweep with ``-m``."""
    try:
        check_overrides(sys.argv[1:])
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    _run()
    if _failed_runs:
        print(f"error: {len(_failed_runs)} run(s) of the sweep failed; their records hold the errors", file=sys.stderr)
        sys.exit(1)


def tables_main() -> None:
    """``qgoft-bench-tables``: the papers' tables from the result records."""
    from qgoft_bench.report.cli import main as tables

    sys.exit(tables())
