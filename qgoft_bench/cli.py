"""Command-line entry points: ``qgoft-bench`` (the Hydra app) and ``qgoft-bench-tables``.

Bad input never ends in a traceback. Before Hydra starts a single job, the group options are checked and every job
of the command (each combination of a sweep ``-m``) is composed and validated (``train.preflight``), with its
results folder; a problem is one line and exit code 2. While running, the harness's own errors (``QgoftError``)
print as one line; in a sweep a failed or diverged run writes its record and the sweep goes on, and the command
exits non-zero at the end. Ctrl-C and SIGTERM (a cluster's preemption) stop the run with an ``interrupted`` record
and one line, exit code 130 (SIGTERM: 143).

A sweep may run its jobs in other processes (``hydra/launcher=joblib``, ``submitit_local``, ``submitit_slurm``):
each job first takes its share of cores and GPUs (``placement.place_job``), and the command's outcome is read back
from the jobs' records. ``--cfg`` shows the config resolved (recipe lookups included) when it resolves.
"""

import logging
import os
import re
import signal
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from qgoft_bench.config import (
    GROUPS,
    SPARSE_BUDGET_KEYS,
    check_seed,
    compose_config,
    group_options,
    sparse_budget_hint,
    sweep_jobs,
)
from qgoft_bench.errors import (
    ConfigError,
    DivergedError,
    QgoftError,
    RecordWriteError,
    exit_interrupted,
    terminate,
)
from qgoft_bench.placement import check_gpus, place_job

log = logging.getLogger("qgoft_bench")
_outcomes: Counter = Counter()  # how the runs of this command that did not complete ended
INSPECT_FLAGS = ("--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c", "--shell-completion", "-sc")


# the keys a `+key=value` override may add: the transformers config's (passed through) and the ones checked
# against a schema (trainer's structured config, each method's knobs, the sparse methods' sweep-wide budgets in
# sparse_budget); elsewhere nothing would read an added key
ADDABLE = ("model.config.", "trainer.", "method.", "sparse_budget.", "hydra")


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _compose_error(err: Exception) -> str:
    """Hydra's or OmegaConf's error in one line; Hydra's advice for a key the config lacks (add it with +) is
    replaced, since nothing would read the added key: the key is most likely misspelt."""
    text = _one_line(err)
    if missing := re.match(r"Could not override '([^']+)'", text):
        return f"the config has no key {missing[1]}: check its spelling ({_keys_hint(missing[1])})"
    if text.startswith("Error merging override") and err.__cause__ is not None:  # the cause says what is wrong
        reason = str(err.__cause__).splitlines()[0]
        return f"{text.removeprefix('Error merging override ')}: {reason}"
    return text


def _keys_hint(key: str) -> str:
    """Where to read the valid keys; a model's depend on its kind (only ``hf`` models have ``dtype``, for one)."""
    name = key.rpartition(".")[2]
    if key.startswith(("method.", "sparse_budget.")) and name in SPARSE_BUDGET_KEYS:
        return sparse_budget_hint(name)
    if key.startswith("model."):
        return ("a model's keys depend on its kind, hf, gguf or timm_vit: `qgoft-bench model=NAME --cfg job` shows "
                "NAME's")
    return "`qgoft-bench --cfg job` shows every key"


def check_overrides(args: list[str]) -> None:
    """Raise ConfigError (one line) for an unknown group option or an override that does not parse."""
    overrides = [a for a in args if "=" in a and not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as err:
        raise ConfigError(f"cannot parse the overrides: {_one_line(err)}") from None
    for override in parsed:
        key = override.key_or_group
        values = list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.value()]
        if (override.is_add() or override.is_force_add()) and key not in GROUPS and \
                not key.startswith(ADDABLE):  # Hydra's advice for a misspelt key is to add it: then nothing reads it
            raise ConfigError(f"{override.input_line}: + adds keys only under {', '.join(ADDABLE)}; set a key the "
                              f"config has without it ({key}=...), and check its spelling ({_keys_hint(key)})")
        if key.startswith("hydra.sweeper.params."):  # Hydra would sweep over this key itself, not set the axis
            axis = key.removeprefix("hydra.sweeper.params.")
            raise ConfigError(f"{override.input_line}: give a sweep's axis as {axis}=... (e.g. "
                              f"{axis}={','.join(map(str, values))}), which replaces the recipe's")
        if key in GROUPS and not override.is_delete():
            valid = group_options(key)
            for value in values:
                if value is not None and str(value) not in valid and not (key == "experiment" and value == "null"):
                    raise ConfigError(f"unknown {key} {value!r}; valid options: {', '.join(valid)}")


def split_seed(job: list[str]) -> tuple[tuple[str, ...], str | None]:
    """A job's overrides without its ``seed=``, and the (last) seed's text or None: jobs that differ only in the seed
    compose to the same config but for it."""
    seeds = [o.partition("=")[2] for o in job if o.startswith("seed=")]
    return tuple(o for o in job if not o.startswith("seed=")), (seeds[-1] if seeds else None)


def parse_seed(text: str) -> int:
    """A ``seed=`` override's text as the integer it names; ``ConfigError`` (``config.check_seed``) otherwise."""
    seed = int(text) if text.lstrip("-").isdigit() else text
    check_seed(seed)
    return seed


def job_overrides(args: list[str]) -> list[str]:
    """The command's overrides of the job config (Hydra's own, ``hydra/...`` and ``hydra.*``, left out)."""
    return [a for a in args if "=" in a and not a.startswith("-") and not a.startswith("hydra")]


def is_multirun(args: list[str]) -> bool:
    """Whether the command line asks for a sweep (Hydra's ``-m`` / ``--multirun``)."""
    return "-m" in args or "--multirun" in args


def launcher_config(args: list[str]) -> DictConfig:
    """``hydra.launcher`` as the command composes it (``hydra/launcher=...`` and ``hydra.launcher.*`` applied)."""
    fixed = [o.input_line for o in OverridesParser.create().parse_overrides([a for a in args if "=" in a])
             if not o.is_sweep_override() and not o.input_line.startswith("-")]
    return compose_config(fixed, hydra_config=True).hydra.launcher


def preflight(args: list[str]) -> int:
    """Compose and validate every job the command will run; returns the number of jobs. Raises ``ConfigError``."""
    check_overrides(args)  # unknown options first: cheap
    overrides = job_overrides(args)
    multirun = is_multirun(args)
    try:
        jobs = sweep_jobs(overrides, multirun)
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(f"bad override: {_compose_error(err)}") from None
    configs = {}  # jobs that differ only in the seed share every other check: one config each, seeds type-checked
    for job in jobs:
        key, seed = split_seed(job)
        if seed is not None:
            parse_seed(seed)
        if key not in configs:
            try:
                configs[key] = (job, compose_config(job))
            except (HydraException, OmegaConfBaseException) as err:
                raise ConfigError(f"bad override in job {' '.join(job)}: {_compose_error(err)}") from None

    from qgoft_bench.train import distributed  # torch and PEFT: only for composed configs
    from qgoft_bench.train.preflight import build_key, check_build, check_results_dir, validate

    if multirun and distributed.world_size() > 1:
        raise ConfigError("torchrun runs one job (its processes train it together): start one torchrun per job of "
                          "the sweep, without -m")

    builds = set()  # one meta build per model, method and task: the jobs of a learning-rate sweep share it
    for job, cfg in configs.values():
        try:
            validate(cfg)
            if (build := build_key(cfg)) not in builds:  # a dry run's too: a sweep of dry runs stops here
                check_build(cfg)
                builds.add(build)
        except ConfigError as err:
            raise ConfigError(f"{err} (job: {' '.join(job)})" if multirun else str(err)) from None
    if distributed.is_main():  # under torchrun the other ranks write nothing, not even the check's probe file
        for folder in {cfg.results_dir for _, cfg in configs.values() if not cfg.dry_run}:  # a dry run writes none
            check_results_dir(folder)
    if multirun:  # a launcher's settings matter only to a sweep
        try:
            launcher = launcher_config(args)
        except (HydraException, OmegaConfBaseException) as err:
            raise ConfigError(f"bad launcher setting: {_one_line(err)}") from None
        for device in {cfg.trainer.device for _, cfg in configs.values()}:
            check_gpus(launcher, device)
    return len(jobs)


@hydra.main(config_path="pkg://qgoft_bench.conf", config_name="config", version_base="1.3")
def _run(cfg: DictConfig) -> float | None:
    """One job: train (or skip) the run of ``cfg`` and return its ``records.selection_score``, the value a Hydra
    sweeper that optimises reads (None when the run did not complete)."""
    sweeping = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        place_job(HydraConfig.get())  # a parallel launcher's job: its cores and GPU, before any torch work
        from qgoft_bench.records import selection_score
        from qgoft_bench.train import distributed, run_experiment  # heavy imports, once the config is good

        try:
            return selection_score(run_experiment(cfg))
        finally:  # torchrun: leave the process group also on an error, so the other ranks' collectives end
            distributed.teardown()
    except QgoftError as err:
        outcome = ("diverged" if isinstance(err, DivergedError) else
                   "unrecorded" if isinstance(err, RecordWriteError) else "failed")
        if not sweeping:
            if _is_rank_0():
                print(f"error: {err}", file=sys.stderr)
            sys.exit(1)
        log.error("run %s: %s", outcome, err)
        _outcomes[outcome] += 1
    except Exception:
        if not sweeping:
            raise  # a bug, not bad input: the traceback is what its reader needs
        log.exception("run failed; its record says why, the sweep goes on")
        _outcomes["failed"] += 1
    return None


def _is_rank_0() -> bool:
    """Whether this process speaks for the command: torchrun's rank 0, or the only process (``RANK`` unset); the
    other ranks meet the same errors and stay silent, so that an error is still one line."""
    return os.environ.get("RANK", "0") == "0"


# torchrun's ranks > 0: no Hydra output folder of their own (rank 0's has the config and the log), warnings and
# errors on stderr only
OTHER_RANKS = ["hydra.run.dir=.", "hydra.output_subdir=null", "~hydra.job_logging.handlers.file",
               "hydra.job_logging.root.handlers=[console]", "hydra.job_logging.root.level=WARNING"]


def main() -> None:
    """``qgoft-bench [overrides]``: one run, or a sweep with ``-m``."""
    signal.signal(signal.SIGTERM, terminate)
    try:
        _main(sys.argv[1:])
    except KeyboardInterrupt as err:
        exit_interrupted(err, "finished runs keep their records, and a run in progress has its record say so; run "
                              "the same command again to finish what is left")


def show_resolved(args: list[str]) -> None:
    """``--cfg``/``-c`` without ``--resolve``: add Hydra's ``--resolve`` (to ``sys.argv``, which Hydra reads) so that
    the config shows as a run gets it, recipe lookups included; when it does not resolve, Hydra shows it unresolved
    after one line that says why."""
    if "--resolve" in args:
        return
    try:
        OmegaConf.to_container(compose_config(job_overrides(args)), resolve=True)
    except (HydraException, OmegaConfBaseException, KeyError) as err:
        print(f"warning: the config does not resolve, shown unresolved: {_one_line(err)}", file=sys.stderr)
        return
    sys.argv.append("--resolve")


def recorded_outcomes(args: list[str], since: str) -> Counter:
    """How the jobs of a sweep that ran in other processes ended, read from their records: records written since
    ``since`` (the command's start) that did not complete, by status, and jobs with no record (``missing``).
    Jobs another worker holds a live claim on are its business."""
    from qgoft_bench.records import read_record

    outcomes: Counter = Counter()
    for row in grid_status(job_overrides(args)):
        if row["state"] == "missing":
            outcomes["missing"] += 1
        elif row["state"] in ("diverged", "failed", "interrupted") and \
                read_record(Path(row["path"])).get("created_at", "") >= since:
            outcomes[row["state"]] += 1
    return outcomes


def _main(args: list[str]) -> None:
    started = datetime.now(UTC).isoformat(timespec="seconds")  # records carry created_at in this form
    try:
        if any(flag in args for flag in INSPECT_FLAGS):
            shown = [flag for flag in ("--cfg", "-c", "--info", "-i", "--shell-completion", "-sc") if flag in args]
            if shown and is_multirun(args):  # Hydra: a ValueError traceback ("Only one of --run, --multirun, ...")
                raise ConfigError(f"-m and {shown[0]} do not go together ({shown[0]} shows one job's config): drop -m "
                                  "and give one value per key")
            check_overrides(args)  # --help, --cfg job ...: show, do not validate
            if "--cfg" in args or "-c" in args:
                show_resolved(args)
        else:
            preflight(args)
    except ConfigError as err:
        if _is_rank_0():
            print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as err:  # in the pre-flight checks: no run has started, so none has a record
        exit_interrupted(err, "while starting, before any run")
    if not _is_rank_0():
        sys.argv.extend(OTHER_RANKS)  # Hydra reads sys.argv
    _run()
    if is_multirun(args) and not any(flag in args for flag in INSPECT_FLAGS) and \
            not launcher_config(args).get("_target_", "").endswith("BasicLauncher"):
        _outcomes.update(recorded_outcomes(args, started))  # the jobs ran elsewhere: their records say how
    if _outcomes:
        parts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(_outcomes.items()))
        recorded = sum(n for outcome, n in _outcomes.items() if outcome not in ("unrecorded", "missing"))
        where = "their records say why" if recorded else "no record could be written (see above)"
        if recorded and _outcomes["unrecorded"]:
            where += f"; {_outcomes['unrecorded']} record(s) could not be written (their JSON is above)"
        print(f"error: {sum(_outcomes.values())} run(s) of the sweep did not complete ({parts}); {where}",
              file=sys.stderr)
        sys.exit(1)


def grid_status(overrides: list[str], problems: set[str] | None = None) -> list[dict[str, object]]:
    """Every job of the sweep ``qgoft-bench -m OVERRIDES``, in Hydra's order, with its ``state``: the status of its
    record (completed, diverged, failed, interrupted), ``running`` (a live claim, ``records.live_claim``) or
    ``missing``; a missing job whose folder holds a final record of the same seed under another run id (a config
    that differs: an earlier version of the harness, or other settings) is ``other config``. Jobs that differ only in
    the seed are composed once (the seed enters the config nowhere else).
    ``problems``, when given, collects what the run's own check (``train.preflight.validate`` and ``check_build``: a
    data folder that is not there, a bad setting, a method the model's shapes refuse) would stop the sweep on, one
    line each."""
    from omegaconf import OmegaConf

    from qgoft_bench.records import drawn_split, live_claim, read_status, record_path_for
    from qgoft_bench.train.preflight import build_key, check_build, validate

    composed: dict[tuple[str, ...], dict] = {}
    builds = set()  # one meta build per model, method and task, as the sweep's own check
    rows = []
    for job in sweep_jobs(overrides, multirun=True):
        key, seed = split_seed(job)
        if key not in composed:
            cfg = compose_config(list(key))
            composed[key] = OmegaConf.to_container(cfg, resolve=True)
            if problems is not None:
                try:
                    validate(cfg)
                    if (build := build_key(cfg)) not in builds:
                        builds.add(build)  # a refusal too: it is the same for every learning rate
                        check_build(cfg)
                except ConfigError as err:
                    problems.add(str(err))
        config = dict(composed[key])
        config["seed"] = parse_seed(seed) if seed is not None else config["seed"]
        path = record_path_for(config)
        state = read_status(path) or ("running" if live_claim(path) else "missing")
        if state == "missing" and _final_elsewhere(path):
            state = "other config"
        rows.append({"task": config["task"]["name"], "method": config["method"]["label"], "seed": config["seed"],
                     "state": state, "path": str(path), "results_dir": config["results_dir"],
                     "drawn": drawn_split(config["task"], config["data"])})
    return rows


def _final_elsewhere(path: Path) -> bool:
    """Whether ``path``'s folder holds a completed or diverged record of the same seed under another run id."""
    from qgoft_bench.records import read_status

    seed = path.name.split("-", 1)[0]
    return any(other != path and read_status(other) in ("completed", "diverged")
               for other in path.parent.glob(f"{seed}-*.json"))


def status_main(argv: list[str]) -> int:
    """``qgoft-bench-tables status OVERRIDES``: per (task, method) of a sweep, how many seeds are done, running,
    failed, diverged, interrupted or missing, and the command that finishes the grid (completed runs are skipped)."""
    import pandas as pd

    if not argv or argv[0] in ("-h", "--help"):
        print("usage: qgoft-bench-tables status [experiment=NAME] [overrides of the sweep, as given to qgoft-bench -m, "
              "results_dir=DIR included]", file=sys.stderr)
        return 2 if not argv else 0
    argv = [arg for arg in argv if not is_multirun([arg])]  # pasted from a sweep: a status is always of one
    if options := [arg for arg in argv if arg.startswith("-")]:
        print(f"error: status takes the sweep's overrides (KEY=VALUE; the records' folder is results_dir=DIR), not "
              f"options: {' '.join(options)}", file=sys.stderr)
        return 2
    problems: set[str] = set()
    try:
        check_overrides(argv)
        rows = pd.DataFrame(grid_status(argv, problems))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (HydraException, OmegaConfBaseException) as err:
        print(f"error: {_compose_error(err)}", file=sys.stderr)
        return 2
    folders = sorted({str(Path(folder).resolve()) for folder in rows["results_dir"]})
    if files := [folder for folder in folders if Path(folder).is_file()]:
        print(f"error: results_dir={files[0]} is a file, not a folder of records: set results_dir=DIR", file=sys.stderr)
        return 2
    print(f"records read from {', '.join(folders)}")
    for folder in folders:
        if not Path(folder).exists():
            print(f"note: {folder} does not exist: no job of this sweep has run there (check results_dir)",
                  file=sys.stderr)
    if rows["drawn"].any():
        print("warning: task.protocol=fu2023 without data.fu2023_dir: these runs draw their own 90/10 split, not Fu "
              "et al.'s files (other run ids: their records are not these); set data.fu2023_dir=DIR (or FU2023_DIR)",
              file=sys.stderr)
    counts = rows.groupby(["task", "method"], sort=False)["state"].value_counts().unstack(fill_value=0)
    states = [s for s in ("completed", "running", "diverged", "failed", "interrupted", "missing", "other config")
              if s in counts]
    print("| task | method | " + " | ".join(states) + " |")
    print("|---|---|" + "--:|" * len(states))
    for (task, method), row in counts[states].iterrows():
        print(f"| {task} | {method} | " + " | ".join(str(row[s]) for s in states) + " |")
    done = rows["state"].isin(("completed", "diverged")).sum()
    print(f"\n{done} of {len(rows)} jobs done (completed or diverged).")
    if len(rows) == 1:
        print("note: a sweep of one job: this recipe sweeps no axes of its own; give them as to qgoft-bench -m, e.g. "
              "task=glue/rte,glue/mrpc method=lora,goft seed=1,2,3", file=sys.stderr)
    if done < len(rows):
        print("to finish the grid (done jobs are skipped; claimed ones are left to their worker): "
              f"qgoft-bench -m {' '.join(argv)}")
        if "other config" in states:
            print("other config: a completed (or diverged) record of the same task, method and seed under another "
                  "config (an earlier version of the harness, or other settings); the tables read it, the command "
                  "above trains the run again under this config")
        for problem in sorted(problems):
            print(f"warning: that command would stop before any job: {problem}", file=sys.stderr)
    return 0


# what every method config holds that is not a knob of the method
_NOT_KNOBS = ("name", "label", "peft_config", "target_modules")


def method_rows() -> list[dict[str, str]]:
    """One row per method config (``conf/method/*.yaml``, presets included), as the default config composes it: the
    config's name (``method=...``), the registry name it builds, its label (the method column of records and
    tables), the PEFT config class it builds or ``ours``, and its knobs with their values."""
    rows = []
    for option in group_options("method"):
        method = OmegaConf.to_container(compose_config([f"method={option}"]).method, resolve=True)
        knobs = ", ".join(f"{key}={value}" for key, value in method.items() if key not in _NOT_KNOBS)
        rows.append({"config": option, "name": method["name"], "label": method["label"],
                     "from": method.get("peft_config") or "ours", "knobs": knobs})
    return rows


def methods_main(argv: list[str]) -> int:
    """``qgoft-bench-tables methods``: every method config and preset as a markdown table (``method_rows``)."""
    if argv[:1] in (["-h"], ["--help"]):
        print("usage: qgoft-bench-tables methods (no arguments): every method config and preset as a markdown table")
        return 0
    if argv:
        print(f"error: qgoft-bench-tables methods takes no arguments (got {' '.join(argv)})", file=sys.stderr)
        return 2
    print("| config | name | label | from | knobs |")
    print("|---|---|---|---|---|")
    for row in method_rows():
        print("| " + " | ".join(f"`{v}`" if k == "config" else v for k, v in row.items()) + " |")
    return 0


def tables_main() -> None:
    """``qgoft-bench-tables``: the papers' tables from the result records; ``status``: a sweep's progress;
    ``methods``: every method config and preset."""
    if sys.argv[1:2] == ["status"]:
        sys.exit(status_main(sys.argv[2:]))
    if sys.argv[1:2] == ["methods"]:
        sys.exit(methods_main(sys.argv[2:]))
    from qgoft_bench.report.cli import main as tables

    sys.exit(tables())


if __name__ == "__main__":  # python -m qgoft_bench.cli, as torchrun -m starts it
    main()
