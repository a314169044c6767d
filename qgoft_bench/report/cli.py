"""``qgoft-bench-tables``: the papers' tables from the result records, with the paper's rows beside ours.

    qgoft-bench-tables TABLE [--results DIR] [--format md|csv|latex] [--out FILE] [options of TABLE]

TABLE is one of glue, vtab, llama, squad, fu2023 (a paper's table: --plot, --plot-y, --plot-tasks, --paper,
--protocol, --select; glue --mnli, --stsb; fu2023 --fu-table), perf (--plot, --paper) or runs (--select, --by);
``qgoft-bench-tables TABLE --help`` lists that table's options. ``status`` and ``methods`` are run by
``qgoft_bench.cli.tables_main`` before this parser (they compose Hydra configs); it only lists them.

Perf rows are read from ``<results>/perf/`` (format: ``tables.read_perf``). ``runs`` lists every (task, model,
method) with its headline metric, training time and peak memory, for any task.
"""

import argparse
import sys
import tempfile
from pathlib import Path

import pandas as pd

from qgoft_bench.records import scan
from qgoft_bench.report.render import FORMATS, render
from qgoft_bench.report.tables import (
    TABLES,
    Table,
    build_perf_table,
    build_runs_table,
    build_table,
    collect,
    on_protocol,
    read_perf,
    table_spec,
)

# the optional outputs and layouts main reads for every table: unset for the tables that do not take them
UNSET = ("plot", "plot_y", "plot_tasks", "protocol")
PAPER_TABLES = ("glue", "vtab", "llama", "squad", "fu2023")
NO_SELECT = ("perf", "vtab")  # perf has no epochs; vtab's --select has its own help
HELP = {"glue": "GLUE dev (qGOFT Table 1)", "vtab": "VTAB-1k test top-1 (qGOFT Table 3)",
        "llama": "LLaMA-2-7B on Alpaca, MMLU accuracy (qGOFT Table 2)", "squad": "SQuAD v1.1 dev (qGOFT Table 4)",
        "fu2023": "Fu et al. (AAAI 2023) Tables 1 and 2: the 90/10 protocol's test scores, mean ± std",
        "perf": "training step time and peak memory from <results>/perf/ (qGOFT Appendix H, Table 10)",
        "runs": "every (task, model, method) of the records: headline metric, time, memory"}
# sub-commands qgoft_bench.cli.tables_main runs before this parser (they compose Hydra configs); listed for --help
DISPATCHED = {"status": "a sweep's progress per cell: `qgoft-bench-tables status [experiment=NAME] [OVERRIDES]`",
              "methods": "every method config and preset: name, label, PEFT class, knobs"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The paper-table command's arguments (``argv``; None: the command line's): a sub-command per table, each with
    the options it reads (``qgoft-bench-tables fu2023 --help``); argparse exits on bad ones."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--results", default="results", help="folder of result records (default: results)")
    common.add_argument("--format", choices=FORMATS, default="md",
                        help="output format (default: md); csv starts with '#' lines (title, footnotes): read it "
                             "with pandas.read_csv(FILE, comment='#')")
    common.add_argument("--out", help="write the table to this file instead of stdout")
    plot = argparse.ArgumentParser(add_help=False)
    plot.add_argument("--plot", metavar="FILE_STEM", help="also write FILE_STEM.png and FILE_STEM.svg")
    paper = argparse.ArgumentParser(add_help=False)
    paper.add_argument("--plot-y", metavar="COLUMN",
                       help="--plot: this column (a task, e.g. copa) instead of the average")
    paper.add_argument("--plot-tasks", metavar="FILE_STEM",
                       help="also plot our mean ± std over seeds, one panel per task, to FILE_STEM.png/.svg")
    rows = argparse.ArgumentParser(add_help=False)
    rows.add_argument("--paper", choices=("all", "matched", "none"), default="all",
                      help="paper rows: all (default), only methods we ran, or none")
    paper.add_argument("--protocol", metavar="NAME",
                       help="lay out our records of this protocol off the paper's instead (e.g. squad's "
                            "dev_articles, fu2023's fu2023_draw), without the paper's rows")
    select = argparse.ArgumentParser(add_help=False)
    select.add_argument("--select", choices=("best", "last"), default="best",
                        help="the record's best (default) or last epoch")

    parser = argparse.ArgumentParser(prog="qgoft-bench-tables", description=__doc__.splitlines()[0],
                                     epilog="`qgoft-bench-tables COMMAND --help`: that command's options")
    commands = (*TABLES, *DISPATCHED)
    tables = parser.add_subparsers(dest="table", required=True, metavar="{" + ",".join(commands) + "}")
    for name in TABLES:
        parents = ([common] + ([plot, rows] if name != "runs" else []) + ([paper] if name in PAPER_TABLES else [])
                   + ([select] if name not in NO_SELECT else []))
        sub = tables.add_parser(name, parents=parents, help=HELP[name], description=HELP[name])
        if name == "glue":
            sub.add_argument("--mnli", choices=("m", "mm"), default="mm",
                             help="MNLI headline: matched or mismatched accuracy (default mm, the qGOFT caption)")
            sub.add_argument("--stsb", choices=("pearson", "mean"), default="pearson",
                             help="STS-B headline: Pearson or mean(Pearson, Spearman) (default pearson)")
        if name == "vtab":  # --vtab-metric: its earlier name
            sub.add_argument("--select", "--vtab-metric", choices=("best", "last"), default="best",
                             help="each record's best epoch (FacT and NOAH report it; default) or last epoch")
        if name == "fu2023":
            sub.add_argument("--fu-table", type=int, choices=(1, 2), default=1,
                             help="the paper's table beside ours: 1 main (default), 2 data perturbation")
        if name == "runs":
            sub.add_argument("--by", nargs="+", action="extend", default=[], metavar="KEY",
                             help="also group by these config keys (e.g. trainer.lr)")
    for name, text in DISPATCHED.items():
        tables.add_parser(name, help=text, add_help=False)
    args, extra = parser.parse_known_args(argv)
    if args.table in DISPATCHED:
        parser.error(f"{args.table} is run by the qgoft-bench-tables command, not by this parser")
    if extra:
        parser.error(f"{args.table} does not take {' '.join(extra)}: `qgoft-bench-tables {args.table} --help` lists "
                     "its options")
    for key in UNSET:
        if not hasattr(args, key):
            setattr(args, key, None)
    if args.plot_y and not args.plot:
        parser.error("--plot-y needs --plot")
    if args.plot and args.plot_tasks and Path(args.plot).with_suffix("") == Path(args.plot_tasks).with_suffix(""):
        parser.error(f"--plot and --plot-tasks both write {args.plot}: give them different file stems")
    for flag, stem in (("--plot", args.plot), ("--plot-tasks", args.plot_tasks)):
        if stem and (stem.endswith(("/", "\\")) or Path(stem).is_dir()):
            parser.error(f"{flag} {stem} is a folder: give a file stem, e.g. {Path(stem) / args.table} (writes "
                         ".png and .svg beside it)")
    return args


def main(argv: list[str] | None = None) -> int:
    """Build, render and write one table (and its plot); returns the process exit status."""
    args = parse_args(argv)
    results = Path(args.results)
    if not results.is_dir():
        print(f"error: --results {results} is not a folder; point it at a results folder (default: results)",
              file=sys.stderr)
        return 2
    if args.table == "perf":
        table = build_perf_table(read_perf(results / "perf"), paper=args.paper)
    else:
        _, skipped = scan(results)
        for path, reason in skipped:
            print(f"skipped {path}: {reason}", file=sys.stderr)
        if skipped:
            print(f"skipped {len(skipped)} file(s) that are not readable records", file=sys.stderr)
        if args.table == "runs":
            try:
                table = build_runs_table(results, select=args.select, by=tuple(args.by))
            except ValueError as error:
                print(f"error: {error}", file=sys.stderr)
                return 2
            for note in table.footnotes:
                if note.startswith("mixed: "):
                    print(note, file=sys.stderr)
        else:
            collection = collect(results)
            layout = {key: getattr(args, key) for key in ("mnli", "stsb", "fu_table") if hasattr(args, key)}
            spec = table_spec(args.table, **layout)  # glue's headlines, fu2023's table; table_spec's defaults
            paper, protocol = args.paper, None
            if args.protocol:
                try:
                    collection, protocol = on_protocol(collection, args.protocol)
                except ValueError as error:
                    print(f"error: {error}", file=sys.stderr)
                    return 2
                paper = "none"
            table = build_table(spec, collection, select=args.select, paper=paper)
            if protocol:
                table.footnotes.append(f"protocol: {protocol}, not the paper's: not comparable with its rows, "
                                       "which are not shown")
            for note in collection.left_out_notes({c.task for c in spec.columns}):
                print(note, file=sys.stderr)
    if table.frame.empty or ("source" in table.frame and not (table.frame["source"] == "ours").any()):
        print(f"no completed records for table {args.table!r} under {results}", file=sys.stderr)
    if args.plot_y and args.plot_y not in table.value_columns:  # before anything is written
        print(f"error: --plot-y {args.plot_y} is not a column of the {args.table} table; use one of "
              f"{', '.join(table.value_columns)}", file=sys.stderr)
        return 2
    if args.plot and args.table != "perf" and (problem := _score_plot_problem(table, args.plot_y or table.plot_y)):
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if args.plot or args.plot_tasks:
        from qgoft_bench.report.plots import figure_paths  # matplotlib: only for a plot
    targets = [[Path(args.out)]] if args.out else []
    targets += [figure_paths(stem) for stem in (args.plot, args.plot_tasks) if stem]
    for files in targets:
        if problem := _unwritable(files):
            print(f"error: {problem}", file=sys.stderr)
            return 1

    text = render(table, args.format)
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    if args.plot:
        # imported here: matplotlib is slow to import and only needed for figures
        from qgoft_bench.report.plots import plot_perf, plot_score_vs_params

        if args.table == "perf":
            paths = plot_perf(table, args.plot)
        else:
            for note in _score_plot_notes(table, args.plot_y or table.plot_y):
                print(note, file=sys.stderr)
            paths = plot_score_vs_params(table, args.plot, y=args.plot_y)
        for path in paths:
            print(f"wrote {path}", file=sys.stderr)
    if args.plot_tasks:
        from qgoft_bench.report.plots import plot_task_panels

        try:
            paths = plot_task_panels(table, args.plot_tasks)
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        for path in paths:
            print(f"wrote {path}", file=sys.stderr)
    return 0


def _plotted(table: Table, column: str) -> pd.Series:
    """Which rows the score-against-parameters plot draws: a ``column`` value and a positive parameter count."""
    return table.frame[column].notna() & (pd.to_numeric(table.frame[table.plot_x], errors="coerce") > 0)


def _score_plot_problem(table: Table, column: str) -> str | None:
    """Why ``--plot`` on ``column`` would draw no point at all, or None."""
    if _plotted(table, column).any():
        return None
    return (f"--plot: no row has both a {column} value and adapter parameters (the x axis is logarithmic); "
            "nothing is written")


def _score_plot_notes(table: Table, column: str) -> list[str]:
    """What a reader of the plot on ``column`` should know that the figure cannot show: rows left out of its log
    axis, only the paper's points, our averages over different tasks."""
    ours = table.frame["source"] == "ours"
    notes = []
    if left := list(table.frame.loc[ours & table.frame[column].notna() & ~_plotted(table, column), "method"]):
        notes.append(f"note: left out of the plot (no adapter parameters for its log axis): {', '.join(left)}")
    if not (ours & _plotted(table, column)).any():
        notes.append(f"warning: no row of ours has a value in column {column}: the plot shows the paper's rows only")
    if column not in table.task_columns:
        covered = table.frame.loc[ours & _plotted(table, column), table.task_columns].notna()
        if len(covered.drop_duplicates()) > 1:
            notes.append(f"warning: our rows' {column} values average different tasks, so their points do not "
                         "compare; --plot-y TASK plots one task")
    return notes


def _unwritable(files: list[Path]) -> str | None:
    """Why ``files`` (in one folder) cannot be written, or None; makes their folder."""
    if folders := [file for file in files if file.is_dir()]:
        return f"cannot write {folders[0]}: it is a folder; choose another path"
    folder = files[0].parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        return f"cannot write {files[0]}: {err.strerror or err} in {folder}; choose another path"
    return None


if __name__ == "__main__":
    sys.exit(main())
