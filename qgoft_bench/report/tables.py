"""Result records -> the papers' tables, our rows with the paper's rows and the difference beside them.

Pipeline: ``collect`` reads every record into a long frame (one row per record, epoch choice and metric),
``aggregate`` reduces it to mean, sample std (ddof=1; NaN for one seed) and n per (task, method label, model),
and ``build_table`` lays one table out from a ``TableSpec`` (which task and metric make each column, how the
paper averages). Values in records are fractions; tables hold percent (correlations x100 too, as the papers print).

A ``Table`` row has ``source`` "ours" | "paper" | "diff" (ours minus paper, same method label), the method label,
the model (ours and the paper's can differ: every row names its model), adapter parameters, n seeds, then values.
Missing cells are NaN, never 0. An average over fewer columns than the paper uses is computed over what is present
and marked; ``render`` prints the mark and a footnote.
"""

import json
import math
import re
import statistics
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from qgoft_bench.records import IGNORED_KEYS, scan
from qgoft_bench.report.reference import load_reference, paper_params, parse_percent

RUN_COLUMNS = [
    "task",
    "method",
    "model",
    "seed",
    "select",
    "metric",
    "value",
    "adapter_params",
    "total_params",
    "headline",  # the record's task.metric: the metric that picked its best epoch
]
LABEL_COLUMNS = ["source", "method", "model", "params", "n"]
LEFT_OUT_COLUMNS = ["task", "method", "model", "status"]
# the record's task.protocol values the paper tables read: the official splits; Fu et al.'s 90/10 (its metrics carry
# _val/_test, so only the fu2023 table reads them); records from before the field existed are official
PAPER_PROTOCOLS = ("official", "fu2023")
# Fu et al.'s protocol on a perturbed training set (task.drop_fraction > 0, Table 2): a cell of its own, whose
# replicates are the (seed, task.drop_seed) pairs, read by the fu2023 table with --fu-table 2 only
PERTURBED = "fu2023_perturb"


@dataclass
class Collection:
    """Completed runs in long form plus what was left out of them."""

    # RUN_COLUMNS; select is "best" or "last": which epoch of the record the value is from
    runs: pd.DataFrame
    # one row per record that did not complete: task, method, model, status (diverged, failed, interrupted)
    left_out: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=LEFT_OUT_COLUMNS))
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # files that are no readable records, and why
    # (task, note) per (task, method, model) whose completed records repeat a seed: the older ones are left out
    repeated: list[tuple[str, str]] = field(default_factory=list)

    def left_out_notes(self, tasks: set[str] | None = None) -> list[str]:
        """One line per (task, method, model) with records left out of the means: how many, by status, or because
        a newer record has the same seed."""
        frame = self.left_out if tasks is None else self.left_out[self.left_out["task"].isin(tasks)]
        notes = []
        for (task, method, model), group in frame.groupby(["task", "method", "model"], sort=True):
            counts = group["status"].value_counts().sort_index()
            notes.append(f"left out: {task} {method} ({model}): " + ", ".join(f"{n} {s}" for s, n in counts.items()))
        repeated = [note for task, note in self.repeated if tasks is None or task in tasks]
        return notes + repeated + self.other_protocol_notes(tasks)

    def other_protocol_notes(self, tasks: set[str] | None) -> list[str]:
        """One line per ``<task> (<protocol>)`` of ``tasks`` in the runs: completed, but measured off the paper's
        protocol, so a paper table leaves them out (the runs table shows them)."""
        notes = []
        for name, group in self.runs.groupby("task", sort=True):
            base, protocol = split_protocol(str(name))
            if protocol and (tasks is None or base in tasks):
                records = int(((group["select"] == "best") & (group["metric"] == group["headline"])).sum())
                shown = ("fu2023 --fu-table 2 reads" if protocol == PERTURBED else
                         "fu2023 --protocol fu2023_draw reads" if protocol.startswith("fu2023_draw") else "runs shows")
                notes.append(f"left out: {records} completed {base} record(s) on protocol {protocol}, not the "
                             f"paper's (qgoft-bench-tables {shown} them)")
        return notes


@dataclass
class Table:
    """A laid-out table: ``frame`` (label columns, then ``value_columns``), stds beside it, marks and footnotes."""

    title: str
    frame: pd.DataFrame
    value_columns: list[str]
    # same index as frame, value_columns only: our std over seeds, the paper's where it prints one (Fu et al.)
    std: pd.DataFrame
    marks: dict[tuple[int, str], str] = field(default_factory=dict)  # (row position, column) -> footnote text
    footnotes: list[str] = field(default_factory=list)
    plot_x: str = "params"
    plot_y: str = "avg"
    task_columns: list[str] = field(default_factory=list)  # value columns that are one task each (no averages)
    # same index as frame, task_columns only: our seed count per cell (the "n" label spans a row's tasks)
    counts: pd.DataFrame = field(default_factory=pd.DataFrame)
    metrics: dict[str, str] = field(default_factory=dict)  # value column -> the record metric it reads

    @property
    def label_columns(self) -> list[str]:
        """The frame's columns that name a row (source, method, model, ...), not values."""
        return [c for c in self.frame.columns if c not in self.value_columns]


@dataclass(frozen=True)
class Column:
    """One value column: the record task and metric key it reads, and the factor to percent."""

    name: str
    task: str
    metric: str
    scale: float = 100.0


# (means by column, stds by column) -> {average name: (value, columns present, columns expected)}
Averager = Callable[[dict[str, float], dict[str, float]], dict[str, tuple[float, int, int]]]


@dataclass(frozen=True)
class TableSpec:
    key: str
    title: str
    reference: str | None  # bundled CSV stem
    paper_model: str
    paper_seeds: int | None
    columns: tuple[Column, ...]
    averager: Averager | None = None
    average_names: tuple[str, ...] = ()
    extra_labels: tuple[str, ...] = ()  # label columns beyond LABEL_COLUMNS (LLaMA: params_ratio)
    plot_x: str = "params"
    plot_y: str = "avg"


def split_protocol(task: str) -> tuple[str, str]:
    """A ``collect`` task name as (task, protocol): ``squad/v1 (dev_articles)`` -> (``squad/v1``, ``dev_articles``);
    a task on a paper protocol has the protocol ""."""
    base, marked, protocol = task.partition(" (")
    return base, protocol[:-1] if marked else ""


def untrained(record: dict) -> bool:
    """Whether ``record`` evaluated the model as built (``eval_only`` without a saved ``adapter``): every method
    starts at the identity, so it is the base model, which the tables call ``base`` with no adapter parameters."""
    config = record.get("config") or {}
    return bool(config.get("eval_only")) and not config.get("adapter")


def _cell_of(record: dict) -> tuple[str, str, str]:
    """(task, method, model) a record counts under in the tables: a task measured off the papers' protocols keeps its
    protocol in its name (another row of results, never beside the paper's); an ``untrained`` record is ``base``."""
    method = record.get("method") or {}
    task = record.get("task") or {}
    protocol = _protocol(record)
    if protocol.startswith("fu2023") and _perturbed(record):  # Table 2's cells; on a drawn split, its twin
        protocol = PERTURBED if protocol == "fu2023" else f"{protocol}; {PERTURBED}"
    name = task.get("name") if protocol in PAPER_PROTOCOLS else f"{task.get('name')} ({protocol})"
    return name, "base" if untrained(record) else method.get("label") or method.get("name"), record.get("model")


def _protocol(record: dict) -> str:
    """The protocol a record ran on (``official`` for records from before the field)."""
    return (record.get("task") or {}).get("protocol") or "official"


def _perturbed(record: dict) -> bool:
    """Whether the record trained on a perturbed training set (``task.drop_fraction`` > 0: Fu et al.'s Table 2)."""
    drop = ((record.get("config") or {}).get("task") or {}).get("drop_fraction")
    return isinstance(drop, int | float) and drop > 0


def _replicate(record: dict) -> tuple[object, object]:
    """What tells a record's repetitions of one cell apart: its seed, and on a perturbed training set also the
    ``task.drop_seed`` that drew it (Table 2 keeps the seed and varies the data)."""
    drop_seed = ((record.get("config") or {}).get("task") or {}).get("drop_seed") if _perturbed(record) else None
    return record.get("seed"), drop_seed


def collect(results_dir: str | Path) -> Collection:
    """Every record under ``results_dir``: completed ones in long form; the others, by status, left out. A record
    whose ``task.protocol`` is not one of ``PAPER_PROTOCOLS`` keeps its protocol in its task name:
    ``squad/v1 (dev_articles)``. An ``untrained`` record is the method ``base``, as the papers' base rows."""
    rows: list[dict] = []
    left_out: list[dict] = []
    records, skipped = scan(results_dir)
    records, repeated = _one_per_seed(records)
    for record in records:
        as_built = untrained(record)
        base = dict(zip(("task", "method", "model"), _cell_of(record), strict=True))
        if record["status"] != "completed":
            left_out.append({**base, "status": record["status"]})
            continue
        params = record.get("params") or {}
        base.update(seed=record.get("seed"), adapter_params=0 if as_built else params.get("adapter_params"),
                    total_params=params.get("total_params"), headline=(record.get("task") or {}).get("metric"))
        metrics = record["metrics"]
        for select in ("best", "last"):
            for metric, value in (metrics.get(select) or {}).items():
                # "epoch" and "step" sit beside the metrics; bools are flags; None is an undefined metric (NaN)
                if metric in ("epoch", "step") or isinstance(value, bool):
                    continue
                if value is None or isinstance(value, int | float):
                    rows.append({**base, "select": select, "metric": metric,
                                 "value": math.nan if value is None else float(value)})
    runs = pd.DataFrame(rows, columns=RUN_COLUMNS)
    for column in ("value", "adapter_params", "total_params"):
        runs[column] = pd.to_numeric(runs[column], errors="coerce").astype(float)
    return Collection(runs=runs, left_out=pd.DataFrame(left_out, columns=LEFT_OUT_COLUMNS), skipped=skipped,
                      repeated=repeated)


def _one_per_seed(records: list[dict]) -> tuple[list[dict], list[tuple[str, str]]]:
    """``records`` with one completed record per ``_cell_of``, protocol and seed: the newest (``created_at``),
    so that a mean over seeds never counts a seed twice (a sweep re-run under a changed config, a learning-rate
    search in the same folder); and a (task, note) per cell that lost records, naming the config keys that differ,
    and per cell whose kept seeds ran different configs (``_changed_settings``: their mean is no one config's)."""
    cells: dict[tuple, list[dict]] = {}
    kept = []
    for record in records:
        if record["status"] != "completed":
            kept.append(record)
            continue
        # a cell's records on the official protocol and on Fu et al.'s (one task name) report different metrics:
        # each protocol keeps its own newest record of a seed
        cells.setdefault((*_cell_of(record), _protocol(record)), []).append(record)
    notes = []
    for (task, method, model, _), group in sorted(cells.items(), key=lambda item: str(item[0])):
        by_seed: dict[object, list[dict]] = {}
        for record in group:
            by_seed.setdefault(_replicate(record), []).append(record)
        dropped, crossed, newest_of_seed = [], set(), []  # crossed: (kept, left out) experiments of a seed
        for same in by_seed.values():
            same.sort(key=lambda r: (str(r.get("created_at") or ""), r["_path"]))
            newest_of_seed.append(same[-1])
            dropped += same[:-1]
            newest = _experiment(same[-1])
            crossed |= {(newest, old) for old in map(_experiment, same[:-1]) if old != newest}
        if dropped:
            differ = _first(_differing_keys(group)) or "nothing recorded"
            note = (f"left out: {task} {method} ({model}): {len(dropped)} older record(s) of a seed that a newer record "
                    f"repeats; configs differ in {differ} (qgoft-bench-tables runs --by KEY shows them apart)")
            if crossed:
                pairs = ", ".join(f"{old} for {new}" for new, old in sorted(crossed))
                note += (f"; records of one experiment left out for another's ({pairs}): point --results at one "
                         "experiment's folder")
            notes.append((task, note))
        kept += newest_of_seed
        if changed := _changed_settings(newest_of_seed):
            note = (f"mixed: {task} {method} ({model}) averages {len(newest_of_seed)} seeds whose configs differ in "
                    f"{_first(changed)}: point --results at one experiment's folder, or see them apart with "
                    "qgoft-bench-tables runs --by KEY")
            notes.append((task, note))
    return kept, notes


def _experiment(record: dict) -> str:
    """The experiment a record was run for: the last part of its ``results_dir`` (``cpu_minilm_glue``)."""
    return Path(str((record.get("config") or {}).get("results_dir") or "?")).name


def on_protocol(collection: Collection, protocol: str) -> tuple[Collection, str]:
    """The runs measured on one protocol off the papers' (``squad/v1 (dev_articles, first 500 questions)``), their
    task names stripped of it, so a paper table lays them out in its own columns; the papers' rows do not belong
    beside them. ``protocol`` is the protocol or its start (``dev_articles``). Returns the collection and the full
    protocol; raises ValueError when no run or more than one protocol matches."""
    bases, protocols = _split_column(collection.runs["task"])
    own = protocols.str.removesuffix(f"; {PERTURBED}")  # a drawn split's perturbed training sets count with it
    matched = (own != "") & own.str.startswith(protocol)
    found = sorted(set(own[matched]))
    if len(found) != 1:
        known = sorted(set(own[own != ""]))
        matches = f"matches {len(found)} protocols of the records ({'; '.join(found)})" if found else "matches none"
        choices = (f"give one of {'; '.join(known)}" if known else
                   "every record here is on the paper's protocol: drop --protocol")
        raise ValueError(f"--protocol {protocol!r} {matches}: {choices}")
    runs = collection.runs[matched].assign(task=_on_its_table(bases, protocols)[matched])
    left_bases, left_protocols = _split_column(collection.left_out["task"])
    kept = left_protocols.str.removesuffix(f"; {PERTURBED}") == found[0]
    left_out = collection.left_out[kept].assign(task=_on_its_table(left_bases, left_protocols)[kept])
    repeated = [(split_protocol(task)[0], note) for task, note in collection.repeated
                if split_protocol(task)[1].removesuffix(f"; {PERTURBED}") == found[0]]
    return Collection(runs=runs, left_out=left_out, skipped=collection.skipped, repeated=repeated), found[0]


def _on_its_table(bases: pd.Series, protocols: pd.Series) -> pd.Series:
    """Task names with ``on_protocol``'s protocol stripped, but a perturbed training set's (``<protocol>;
    fu2023_perturb``) named ``<task> (fu2023_perturb)``: the name Table 2 reads, and Table 1 leaves out."""
    perturbed = protocols.str.endswith(f"; {PERTURBED}")
    return bases.where(~perturbed, bases + f" ({PERTURBED})")


def _split_column(tasks: pd.Series) -> tuple[pd.Series, pd.Series]:
    """``split_protocol`` over a column of task names: (tasks, protocols), both indexed like ``tasks``."""
    pairs = [split_protocol(str(task)) for task in tasks]
    return (pd.Series([b for b, _ in pairs], index=tasks.index, dtype=object),
            pd.Series([p for _, p in pairs], index=tasks.index, dtype=object))


def aggregate(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std (ddof=1) and n over seeds per (task, method, model, select, metric)."""
    keys = ["task", "method", "model", "select", "metric"]
    grouped = runs.groupby(keys, sort=False, dropna=False)
    out = grouped["value"].agg(mean="mean", std="std", n="count")
    # Parameter counts do not depend on the seed; the median shrugs off a stray record.
    out["adapter_params"] = grouped["adapter_params"].median()
    out["total_params"] = grouped["total_params"].median()
    return out.reset_index()


GLUE_METRICS = {
    "mnli": "accuracy_mm", "sst2": "accuracy", "cola": "matthews", "qqp": "accuracy",
    "qnli": "accuracy", "rte": "accuracy", "mrpc": "accuracy", "stsb": "pearson",
}  # fmt: skip
# Fu et al.'s metrics on the official dev set, which their protocol reports as test (task.protocol=fu2023)
FU_METRICS = {
    "cola": ("glue/cola", "matthews_test"), "stsb": ("glue/stsb", "pearson_spearman_mean_test"),
    "mrpc": ("glue/mrpc", "accuracy_f1_mean_test"), "rte": ("glue/rte", "accuracy_test"),
    "cb": ("superglue/cb", "accuracy_macro_f1_mean_test"), "copa": ("superglue/copa", "accuracy_test"),
    "wsc": ("superglue/wsc", "accuracy_test"),
}  # fmt: skip
# qGOFT Table 3's columns: the 19 VTAB-1k tasks (folder names) in three groups, in the paper's order. The report
# reads records only, so it keeps its own copy of the names; tests pin it to the data loader's VTAB_TASKS.
VTAB_GROUPS = {
    "natural": ["cifar", "caltech101", "dtd", "oxford_flowers102", "oxford_iiit_pet", "svhn", "sun397"],
    "specialized": ["patch_camelyon", "eurosat", "resisc45", "diabetic_retinopathy"],
    "structured": ["clevr_count", "clevr_dist", "dmlab", "kitti", "dsprites_loc", "dsprites_ori", "smallnorb_azi",
                   "smallnorb_ele"],
}  # fmt: skip
VTAB_COLUMNS = [task for tasks in VTAB_GROUPS.values() for task in tasks]
# qGOFT Table 2's columns (the reference CSV's names) and the metric each reads from an instruct/alpaca_mmlu record
# (tasks/mmlu.py: mmlu_<k>shot_<category>)
MMLU_PARTS = {"stem": "stem", "social": "social", "hum": "humanities", "other": "other", "avg": "avg"}
MMLU_METRICS = {f"mmlu{shots}_{part}": f"mmlu_{shots}shot_{category}" for shots in (5, 0)
                for part, category in MMLU_PARTS.items()}
MMLU_COLUMNS = list(MMLU_METRICS)
TABLES = ("glue", "vtab", "llama", "squad", "fu2023", "perf", "runs")


def mean_over(values: dict[str, float], names: list[str]) -> tuple[float, int, int]:
    """Plain mean of ``values[name]`` over the names present: (mean or NaN, k present, n names)."""
    present = [values[n] for n in names if n in values and not math.isnan(values[n])]
    return (statistics.fmean(present) if present else math.nan), len(present), len(names)


def glue_averages(means: dict[str, float], stds: dict[str, float]) -> dict[str, tuple[float, int, int]]:
    """qGOFT Table 1: plain mean of the 8 GLUE tasks."""
    return {"avg": mean_over(means, list(GLUE_METRICS))}


def vtab_averages(means: dict[str, float], stds: dict[str, float]) -> dict[str, tuple[float, int, int]]:
    """Group means; ``avg`` = mean of the three group means (FacT/NOAH/qGOFT); ``mean19`` = plain 19-task mean."""
    out = {group: mean_over(means, tasks) for group, tasks in VTAB_GROUPS.items()}
    group_means = {group: value for group, (value, _, _) in out.items()}
    value, _, _ = mean_over(group_means, list(VTAB_GROUPS))
    present = sum(k for _, k, _ in out.values())
    out["avg"] = (value, present, len(VTAB_COLUMNS))
    out["mean19"] = mean_over(means, VTAB_COLUMNS)
    return out


def fu_averages(means: dict[str, float], stds: dict[str, float]) -> dict[str, tuple[float, int, int]]:
    """Fu et al. Table 1: ``avg`` = mean of the 7 task means, ``avg_std`` = mean of the 7 task stds."""
    return {"avg": mean_over(means, list(FU_METRICS)), "avg_std": mean_over(stds, list(FU_METRICS))}


def table_spec(key: str, mnli: str = "mm", stsb: str = "pearson", fu_table: int = 1) -> TableSpec:
    """The layout of one paper table; ``mnli``/``stsb`` pick the GLUE headline metrics (qGOFT caption: mm)."""
    if key == "glue":
        metrics = dict(GLUE_METRICS, mnli=f"accuracy_{mnli}")
        metrics["stsb"] = "pearson_spearman_mean" if stsb == "mean" else "pearson"
        columns = tuple(Column(name, f"glue/{name}", metric) for name, metric in metrics.items())
        return TableSpec(
            "glue",
            "GLUE dev (qGOFT Table 1)",
            "glue_deberta_v3_base",
            "deberta_v3_base",
            5,
            columns,
            glue_averages,
            ("avg",),
        )
    if key == "vtab":
        columns = tuple(Column(name, f"vtab/{name}", "accuracy") for name in VTAB_COLUMNS)
        return TableSpec(
            "vtab",
            "VTAB-1k test top-1 (qGOFT Table 3)",
            "vtab1k_vit_b16",
            "vit_b16_in21k",
            None,
            columns,
            vtab_averages,
            (*VTAB_GROUPS, "avg", "mean19"),
        )
    if key == "fu2023":
        suffix = f" ({PERTURBED})" if fu_table == 2 else ""  # Table 2 reads the perturbed training sets only
        columns = tuple(Column(name, task + suffix, metric) for name, (task, metric) in FU_METRICS.items())
        return TableSpec(
            "fu2023",
            f"GLUE/SuperGLUE test (Fu et al. 2023 Table {fu_table})",
            f"sam_fu2023_table{fu_table}",
            "roberta_base",
            10,
            columns,
            fu_averages,
            ("avg", "avg_std"),
        )
    if key == "squad":
        columns = (Column("em", "squad/v1", "exact_match"), Column("f1", "squad/v1", "f1"))
        return TableSpec(
            "squad",
            "SQuAD v1.1 dev (qGOFT Table 4)",
            "squad_v1_deberta_v3_base",
            "deberta_v3_base",
            None,
            columns,
            plot_y="f1",
        )
    if key == "llama":
        columns = tuple(Column(name, "instruct/alpaca_mmlu", MMLU_METRICS[name]) for name in MMLU_COLUMNS)
        # Vicuna-Eval is a 1-10 judge score, not a fraction: printed as is. Ours only: the response loss (nats per
        # token) and perplexity on the held-out instruction records, where tuning shows on a model near MMLU's chance
        columns += (Column("vicuna_eval", "instruct/alpaca_mmlu", "vicuna_eval", scale=1.0),
                    Column("heldout_loss", "instruct/alpaca_mmlu", "loss", scale=1.0),
                    Column("heldout_ppl", "instruct/alpaca_mmlu", "perplexity", scale=1.0))
        return TableSpec(
            "llama",
            "LLaMA-2-7B on Alpaca, MMLU accuracy (qGOFT Table 2)",
            "llama2_7b_alpaca_mmlu",
            "llama2_7b",
            None,
            columns,
            extra_labels=("params_ratio",),
            plot_x="params_ratio",
            plot_y="mmlu5_avg",
        )
    raise ValueError(f"unknown table {key!r}; choose from {', '.join(TABLES)}")


def _n_label(counts: list[int]) -> str:
    if not counts:
        return ""
    low, high = min(counts), max(counts)
    return str(low) if low == high else f"{low}-{high}"


def _our_rows(spec: TableSpec, agg: pd.DataFrame, select: str) -> list[dict]:
    """One row per (method, model) with means, stds and n per column (percent)."""
    picked = []
    for column in spec.columns:
        part = agg[
            (agg["task"] == column.task) & (agg["metric"] == column.metric) & (agg["select"] == select)
        ]
        picked.append(part.assign(column=column.name, scale=column.scale))
    cells = pd.concat(picked)
    rows = []
    for (method, model), group in cells.groupby(["method", "model"], sort=True):
        means = {c.column: c.mean * c.scale for c in group.itertuples()}
        stds = {c.column: c.std * c.scale for c in group.itertuples()}
        counts = {c.column: int(c.n) for c in group.itertuples()}
        adapter = group["adapter_params"].median()
        total = group["total_params"].median()
        rows.append({
            "source": "ours", "method": method, "model": model, "params": adapter,
            "params_ratio": 100 * adapter / total if total else math.nan,
            "n": _n_label(list(counts.values())), "means": means, "stds": stds, "counts": counts,
        })  # fmt: skip
    return rows


def _separated(ours: dict, our_stds: dict, paper: dict, paper_stds: dict, paper_seeds: int | None,
               diff: dict) -> dict[str, str]:
    """The task cells of a diff row where the seeds separate ours from the paper: Welch's t-test on the two means,
    stds and seed counts (the paper prints stds: Fu et al.), p < 0.05."""
    from scipy.stats import ttest_ind_from_stats

    notes = {}
    for column in diff:
        n = ours.get("counts", {}).get(column, 0)
        if n < 2 or not paper_seeds or column not in paper_stds or math.isnan(our_stds.get(column, math.nan)):
            continue
        p = ttest_ind_from_stats(ours["means"][column], our_stds[column], n, paper["means"][column],
                                 paper_stds[column], paper_seeds, equal_var=False).pvalue
        if p < 0.05:
            notes[column] = f"seeds separate it (Welch p = {p:.3f}, n = {n} vs {paper_seeds})"
    return notes


def _paper_rows(spec: TableSpec) -> list[dict]:
    ref = load_reference(spec.reference)
    params = paper_params(ref)
    rows = []
    for method, cells in ref.frame.iterrows():
        means = {c.name: float(cells[c.name]) for c in spec.columns if pd.notna(cells.get(c.name))}
        stds = {
            c.name: float(cells[f"{c.name}_std"])
            for c in spec.columns
            if pd.notna(cells.get(f"{c.name}_std"))
        }
        rows.append({
            "source": "paper", "method": method, "model": spec.paper_model, "params": params[method],
            "params_ratio": parse_percent(cells.get("params_ratio")),
            "n": str(spec.paper_seeds or ""), "means": means, "stds": stds, "printed": cells,
        })  # fmt: skip
    return rows


def _fill(row: dict, spec: TableSpec) -> tuple[dict, dict, dict[str, str]]:
    """Values and stds of every value column of ``row``, averages included, and notes for incomplete averages."""
    values, stds, notes = dict(row["means"]), dict(row["stds"]), {}
    averages = spec.averager(row["means"], row["stds"]) if spec.averager else {}
    for name, (value, present, expected) in averages.items():
        printed = row.get("printed")
        if printed is not None and pd.notna(printed.get(name)):
            # the paper's own printed average; tests check that it follows from the cells
            value = float(printed[name])
        values[name] = value
        if present < expected and not math.isnan(value):
            notes[name] = f"average over {present} of {expected} tasks"
    return values, stds, notes


def build_table(spec: TableSpec, collection: Collection, select: str = "best", paper: str = "all") -> Table:
    """Lay out ``spec`` from ``collection``; ``select`` = record epoch (best|last); ``paper`` = all|matched|none."""
    value_columns = [c.name for c in spec.columns] + list(spec.average_names)
    ours = _our_rows(spec, aggregate(collection.runs), select)
    papers = {row["method"]: row for row in _paper_rows(spec)} if spec.reference and paper != "none" else {}
    our_methods = {row["method"] for row in ours}
    if paper == "matched":
        papers = {m: row for m, row in papers.items() if m in our_methods}
    order = list(papers) + sorted(our_methods - set(papers))

    records, std_records, count_records, marks = [], [], [], {}
    task_columns = [c.name for c in spec.columns]

    def add(row: dict, values: dict, stds: dict, notes: dict[str, str]) -> None:
        position = len(records)
        labels = {k: row.get(k, "") for k in (*LABEL_COLUMNS, *spec.extra_labels)}
        records.append({**labels, **{c: values.get(c, math.nan) for c in value_columns}})
        std_records.append({c: stds.get(c, math.nan) for c in value_columns})
        count_records.append({c: row.get("counts", {}).get(c, math.nan) for c in task_columns})
        for column, note in notes.items():
            marks[(position, column)] = note

    for method in order:
        paper_values = None
        if method in papers:
            paper_values, paper_stds, paper_notes = _fill(papers[method], spec)
            add(papers[method], paper_values, paper_stds, paper_notes)
        mine = [row for row in ours if row["method"] == method]
        filled = [(row, *_fill(row, spec)) for row in mine]
        for row, values, stds, notes in filled:
            add(row, values, stds, notes)
        if paper_values is None:
            continue
        for row, values, stds, notes in filled:
            # an average over fewer tasks than the paper's is not comparable with it: no difference for it
            diff = {
                c: values[c] - paper_values[c]
                for c in value_columns
                if c in values and c in paper_values and c not in notes
            }
            label = {"source": "diff", "method": method, "model": f"{row['model']} - {spec.paper_model}",
                     "params": math.nan, "params_ratio": math.nan, "n": ""}  # fmt: skip
            separated = _separated(row, stds, papers[method], paper_stds, spec.paper_seeds, diff)
            add(label, diff, {}, {**{c: n for c, n in notes.items() if c in diff}, **separated})

    columns = [*LABEL_COLUMNS, *spec.extra_labels, *value_columns]
    frame = pd.DataFrame(records, columns=columns)
    std = pd.DataFrame(std_records, columns=value_columns, dtype=float)
    counts = pd.DataFrame(count_records, columns=task_columns, dtype=float)
    table = Table(spec.title, frame, value_columns, std, marks, plot_x=spec.plot_x, plot_y=spec.plot_y,
                  task_columns=task_columns, counts=counts, metrics={c.name: c.metric for c in spec.columns})
    table.footnotes = _footnotes(spec, collection, select, bool(papers))
    if spec.average_names and (note := _uneven_averages(ours, task_columns)):
        table.footnotes.append(note)
    return table


def _uneven_averages(ours: list[dict], task_columns: list[str]) -> str | None:
    """A footnote when our rows' averages are over different sets of tasks (a grid half done): those averages do not
    rank the rows."""
    covered: dict[tuple[str, ...], list[str]] = {}
    for row in ours:
        tasks = tuple(c for c in task_columns if not math.isnan(row["means"].get(c, math.nan)))
        covered.setdefault(tasks, []).append(str(row["method"]))
    if len(covered) < 2:
        return None
    sets = "; ".join(f"{', '.join(tasks) or 'none'} for {', '.join(methods)}"
                     for tasks, methods in sorted(covered.items(), key=lambda item: -len(item[0])))
    return f"our rows' averages cover different tasks ({sets}): compare them only between rows over the same tasks"


def _bare(metric: str) -> str:
    """A metric's name without the split Fu et al.'s protocol adds (selected on _val, reported on _test)."""
    return metric.removesuffix("_val").removesuffix("_test")


def _footnotes(spec: TableSpec, collection: Collection, select: str, with_paper: bool) -> list[str]:
    metrics = {c.metric for c in spec.columns}
    if len(metrics) == 1:
        headline = f"metric: {metrics.pop()}"
    else:
        headline = "metrics: " + ", ".join(f"{c.name}={c.metric}" for c in spec.columns if c.name != c.metric)
    over = ("replicates (n: seed and task.drop_seed pairs, each a perturbed training set)"
            if any(PERTURBED in c.task for c in spec.columns) else "seeds")
    notes = [f"ours: mean over {over} (std ddof=1) at the record's {select} epoch; percent; {headline}"]
    if select == "best":  # a column that reads another metric than the one that picked the epoch says so
        for column in spec.columns:
            picked = set(collection.runs.loc[collection.runs["task"] == column.task, "headline"].dropna())
            if picked and {_bare(m) for m in picked} != {_bare(column.metric)}:
                notes.append(f"{column.name}: {column.metric} at the epoch the records' headline metric "
                             f"({', '.join(sorted(picked))}) picked, not the best {column.metric} of any epoch")
    if with_paper:
        ref = load_reference(spec.reference)
        notes.append(f"paper: {spec.paper_model}, {ref.source}")
        notes.append("diff = ours - paper, on the models named in the row")
    read: dict[str, set[str]] = {}  # task -> the metrics the table's columns read
    for column in spec.columns:
        read.setdefault(column.task, set()).add(column.metric)
    notes += collection.left_out_notes(set(read))
    # completed runs no column reads: another task (task=mmlu beside the llama table), or a task of the table
    # without its metric (official-protocol records beside the fu2023 table's *_test metrics); a task of the table
    # on another protocol has its note from left_out_notes already
    cells = collection.runs.groupby(["task", "method", "model", "seed"], dropna=False)["metric"].agg(set)
    unread = Counter(task for (task, *_), metrics in cells.items()
                     if not metrics & read.get(task, set()) and not _off_protocol(task, read))
    unperturbed = {task: n for task, n in unread.items() if f"{task} ({PERTURBED})" in read}  # beside Table 2
    if unperturbed:
        notes.append("not in this table: " + ", ".join(f"{n} completed run(s) of {task}" for task, n in
                                                        sorted(unperturbed.items()))
                     + " on the whole training split, not a perturbed one (--fu-table 1 reads them)")
    unread = Counter({task: n for task, n in unread.items() if task not in unperturbed})
    if unread:
        notes.append("not in this table: " + ", ".join(f"{n} completed run(s) of {task}" for task, n in
                                                        sorted(unread.items()))
                     + " (another task, or not the metric its column reads; qgoft-bench-tables runs lists them)")
    return notes


def _off_protocol(task: str, tasks: Iterable[str]) -> bool:
    """Whether ``task`` (a ``collect`` name) is one of ``tasks`` measured on a protocol off the papers'."""
    base, protocol = split_protocol(task)
    return bool(protocol) and base in tasks


NOT_FRACTIONS = {"loss", "perplexity", "vicuna_eval"}  # headline metrics the runs table shows as they are, not in %

PERF_VALUES = ["time_ms", "ratio_vs_lora", "peak_memory_mb"]
PERF_LABELS = ["source", "machine", "case", "method", "n"]


def read_perf(perf_dir: str | Path) -> pd.DataFrame:
    """Benchmark rows from every ``*.json`` under ``perf_dir`` (default place: ``results/perf/``).

    A file holds either a list of rows or an object ``{"machine": str, "rows": [row, ...]}`` (other keys ignored).
    A row::

        method         method label ("qgoft", "lora_r8", ...); "name" is accepted instead
        time_ms        mean time of one training step (forward + backward + optimiser) in ms; or "step_time_ms"
        ratio_vs_lora  time_ms / LoRA's time_ms; optional: computed from the LoRA row ("lora" or "lora_r*") of
                       the same file, machine and case when absent
        peak_memory_mb peak memory of the step (CUDA peak allocated on GPU, resident memory on CPU); optional
        machine        where it ran ("H100 80GB", "2-core CPU"); optional, the file's "machine" when absent
        case           what was timed ("deberta_v3_base, batch 32, seq 128"); optional

    Returns one row per benchmark row with columns machine, case, method and ``PERF_VALUES`` (NaN when missing).
    """
    rows = []
    for path in sorted(Path(perf_dir).rglob("*.json")):
        if path.name.startswith("."):
            continue
        try:
            payload = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        file_machine = payload.get("machine", "") if isinstance(payload, dict) else ""
        items = payload.get("rows", []) if isinstance(payload, dict) else payload
        file_rows = []
        for item in items if isinstance(items, list) else []:
            if not isinstance(item, dict) or not (item.get("method") or item.get("name")):
                continue
            file_rows.append({
                "machine": str(item.get("machine") or file_machine),
                "case": str(item.get("case") or ""),
                "method": str(item.get("method") or item.get("name")),
                "time_ms": _number(item.get("time_ms", item.get("step_time_ms"))),
                "ratio_vs_lora": _number(item.get("ratio_vs_lora")),
                "peak_memory_mb": _number(item.get("peak_memory_mb")),
            })  # fmt: skip
        rows.extend(_fill_ratio(file_rows))
    return pd.DataFrame(rows, columns=["machine", "case", "method", *PERF_VALUES])


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan


_LORA = re.compile(r"^lora(_r\d+)?$")


def _fill_ratio(rows: list[dict]) -> list[dict]:
    """Fill a missing ratio_vs_lora from the LoRA row of the same machine and case (same file)."""
    lora = {(r["machine"], r["case"]): r["time_ms"] for r in rows if _LORA.match(r["method"])}
    for row in rows:
        base = lora.get((row["machine"], row["case"]), math.nan)
        if math.isnan(row["ratio_vs_lora"]) and base > 0:
            row["ratio_vs_lora"] = row["time_ms"] / base
    return rows


def build_perf_table(perf: pd.DataFrame, paper: str = "all") -> Table:
    """Our benchmark rows (mean over files per machine, case, method) and the qGOFT paper's Table 10 speeds."""
    ours = perf.groupby(["machine", "case", "method"], sort=True)[PERF_VALUES].agg(["mean", "count"])
    records = []
    for (machine, case, method), cells in ours.iterrows():
        values = {name: cells[(name, "mean")] for name in PERF_VALUES}
        n = _n_label([int(cells[(name, "count")]) for name in PERF_VALUES if cells[(name, "count")]])
        records.append(
            {"source": "ours", "machine": machine, "case": case, "method": method, "n": n, **values}
        )
    methods = {row["method"] for row in records}
    ref = load_reference("speed_qgoft_table10")
    lora_seconds = ref.frame.loc["lora", "seconds_per_batch"]
    footnotes = ["time_ms: one training step; ratio_vs_lora: time over LoRA's on the same machine and case"]
    if paper != "none":
        footnotes.append(f"paper: {ref.source}")
        for method, seconds in ref.frame["seconds_per_batch"].items():
            if paper == "matched" and not any(m == method or m.startswith(f"{method}_") for m in methods):
                continue
            records.append({
                "source": "paper", "machine": "2x RTX 3090", "case": "QNLI, deberta_v3_base, one batch",
                "method": method, "n": "", "time_ms": 1000 * seconds, "ratio_vs_lora": seconds / lora_seconds,
                "peak_memory_mb": math.nan,
            })  # fmt: skip
    frame = pd.DataFrame(records, columns=[*PERF_LABELS, *PERF_VALUES])
    std = pd.DataFrame(math.nan, index=frame.index, columns=PERF_VALUES)
    return Table(
        "Training step time and peak memory (qGOFT Appendix H, Table 10)",
        frame,
        PERF_VALUES,
        std,
        footnotes=footnotes,
        plot_x="method",
        plot_y="time_ms",
    )


RUNS_VALUES = ["score", "train_loss", "train_time_s", "peak_memory_mb"]


def _last_train_loss(record: dict) -> float:
    epochs = record["metrics"].get("epochs") or []
    return epochs[-1].get("train_loss", math.nan) if epochs else math.nan


def _config_value(config: dict, dotted: str) -> object:
    for part in dotted.split("."):
        config = config.get(part) if isinstance(config, dict) else None
    return config


def build_runs_table(results_dir: str | Path, select: str = "best", by: tuple[str, ...] = ()) -> Table:
    """Every (task, model, method) under ``results_dir`` with its own headline metric, last-epoch training loss,
    training time and peak memory: the table for any task, paper grid or not (the demo, CPU studies). Mean ± std over
    the completed seeds; ``left_out`` counts the other records by status. ``by`` adds config keys to the grouping
    (e.g. ``trainer.lr`` for a learning-rate search); a record without the key groups under ``(unset)``, and a key
    that no record has is a ``ValueError``."""
    records, _ = scan(results_dir)
    for key in by:
        if records and all(_config_value(r.get("config") or {}, key) is None for r in records):
            raise ValueError(f"--by {key}: no record under {results_dir} has this config key")
    rows = []
    for record in records:
        completed, as_built = record["status"] == "completed", untrained(record)
        metric = reported_metric(record)
        score = record["metrics"][select].get(metric) if completed else None
        params = 0 if as_built else (record.get("params") or {}).get("adapter_params", math.nan)
        rows.append({
            "task": _cell_of(record)[0], "model": record["model"],  # a protocol off the papers' kept in the name
            "method": "base" if as_built else record["method"].get("label"),
            "metric": metric, "status": record["status"], "params": params if completed else math.nan,
            "score": (score if metric in NOT_FRACTIONS else 100 * score) if isinstance(score, int | float) else math.nan,
            "train_loss": _last_train_loss(record) if completed else math.nan,
            "train_time_s": record.get("train_time_s", math.nan) if completed else math.nan,
            "peak_memory_mb": record.get("peak_memory_mb", math.nan) if completed else math.nan,
            **{key: _config_value(record.get("config") or {}, key) for key in by},
        })
    labels = ["task", "model", "method", *by, "metric"]
    notes = _mixed_cells(records, by)
    frame = pd.DataFrame(rows, columns=[*labels, "status", "params", *RUNS_VALUES])
    # a completed record whose headline is null (every epoch's NaN: a constant prediction's correlation) has no
    # score: the mean skips it, so n does not count it, and left_out names it
    frame.loc[(frame["status"] == "completed") & frame["score"].isna(), "status"] = "completed without a score"
    for key in by:
        frame[key] = frame[key].astype(object).where(frame[key].notna(), "(unset)")
    grouped = frame.groupby(labels, sort=True, dropna=False)
    # records that did not complete have NaN values: means and stds skip them
    means = grouped[["params", *RUNS_VALUES]].mean().reset_index()
    means.insert(len(labels) + 1, "n", grouped["status"].agg(lambda s: str((s == "completed").sum())).to_numpy())
    means["left_out"] = grouped["status"].agg(_left_out_text).to_numpy()
    std = grouped[RUNS_VALUES].std().reset_index(drop=True)
    notes = notes + [(f"score: the task's headline metric at the record's {select} epoch, percent (a loss or perplexity as "
              "it is; on Fu et al.'s protocol the *_test value at the epoch *_val picked, what it reports); mean ± std "
              "(ddof=1) over "
              "the completed seeds (n); left_out: records that did not complete, by status; train_loss: mean "
              "training loss of the last epoch (a score near the majority class with a loss that never fell says the "
              "run did not learn); train_time_s: the training loop; peak_memory_mb: peak allocated on CUDA, peak RSS "
              "on CPU (with heap glibc kept from freed tensors: compare methods with benchmarks/peak_rss.sh)")]
    return Table("Runs", means, RUNS_VALUES, std, footnotes=notes, plot_x="params", plot_y="score")


def reported_metric(record: dict) -> str | None:
    """The metric a record reports: its headline (``task.metric``, which picked the best epoch), or on Fu et al.'s
    protocol, whose headline is a validation metric (``*_val``), its ``*_test`` twin: the protocol reports the test
    score at the epoch validation picked (also for a record that did not complete, so that it counts in that row)."""
    metric = record["task"].get("metric")
    protocol = str(record["task"].get("protocol") or "fu2023")  # records from before the field: only Fu's has *_val
    if isinstance(metric, str) and metric.endswith("_val") and protocol.startswith("fu2023"):
        return f"{metric.removesuffix('_val')}_test"
    return metric


def _flatten(config: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = json.dumps(value, sort_keys=True)
    return out


def _mixed_cells(records: list[dict], by: tuple[str, ...]) -> list[str]:
    """A note for every table cell that averages completed records of different configs (two records with one
    seed, or seeds whose settings differ: ``_changed_settings``): which config keys differ, so that ``--by`` can
    split them."""
    cells: dict[tuple, list[dict]] = {}
    for record in records:
        if record["status"] == "completed":
            key = (_cell_of(record)[0], record["model"], record["method"].get("label"),
                   *(str(_config_value(record.get("config") or {}, k)) for k in by))
            cells.setdefault(key, []).append(record)
    notes = []
    for key, group in sorted(cells.items()):
        seeds = [_replicate(r) for r in group]
        cell = " ".join(map(str, key[:3]))
        if len(seeds) != len(set(seeds)):
            differ = _first(_differing_keys(group)) or "nothing recorded"
            notes.append(f"mixed: {cell} averages {len(group)} records with repeated seeds; their configs differ in "
                         f"{differ}: split them with --by KEY")
        elif changed := _changed_settings(group):
            notes.append(f"mixed: {cell} averages {len(group)} seeds whose configs differ in {_first(changed)}: "
                         "split them with --by KEY")
    return notes


def _differing_keys(records: list[dict], common_only: bool = False) -> list[str]:
    """The dotted config keys whose values differ between ``records``, the seed and what is no part of a run's
    identity (``records.IGNORED_KEYS``: paths, progress bars, Hydra's own) left aside: first the keys every record
    has (a changed setting, e.g. trainer.lr), then those only some have (a field added to the config since the older
    records were written), which ``common_only`` leaves out."""
    flat = [_flatten(r.get("config") or {}) for r in records]
    ignored = tuple(f"{key}." for key in IGNORED_KEYS)
    differ = [k for k in set().union(*flat) if len({f.get(k) for f in flat}) > 1
              and k not in ("seed", *IGNORED_KEYS) and not k.startswith(ignored)]
    in_all = {k for k in differ if all(k in f for f in flat)}
    return sorted((k for k in differ if k in in_all or not common_only), key=lambda k: (k not in in_all, k))


def _changed_settings(records: list[dict]) -> list[str]:
    """The ``_differing_keys`` every one of ``records`` has, but ``task.drop_seed`` (Table 2's replicates differ in
    it): settings the records ran with different values (``method.delora_lambda``, ``trainer.lr``), so that their mean
    over seeds is no single config's. A key only some records have is a field added since the older ones, not a
    change."""
    return [k for k in _differing_keys(records, common_only=True) if k != "task.drop_seed"]


def _first(keys: list[str], count: int = 8) -> str:
    """The first ``count`` of ``keys``, and how many more there are."""
    return ", ".join(keys[:count]) + (f" and {len(keys) - count} more" if len(keys) > count else "")


def _left_out_text(statuses: pd.Series) -> str:
    counts = statuses[statuses != "completed"].value_counts().sort_index()
    return ", ".join(f"{n} {status}" for status, n in counts.items())
