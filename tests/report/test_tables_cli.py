"""``qgoft-bench-tables`` end to end on generated records, and the perf reader."""

import json
import math
import subprocess
import sys

import pytest

from qgoft_bench.report.cli import main
from qgoft_bench.report.tables import read_perf


def test_main_writes_every_format_and_plot(write, tmp_path, capsys):
    for seed, accuracy in [(1, 0.70), (2, 0.74)]:
        write("glue/rte", "qgoft", seed, {"accuracy": accuracy}, adapter_params=331_488)
    write("glue/rte", "qgoft", 3, {"accuracy": 0.1}, status="failed")
    results = tmp_path / "results"
    for fmt, expected in [("md", "| ours | qgoft | minilm_l6 | 0.331M | 2 |"), ("csv", "ours,qgoft,minilm_l6"),
                          ("latex", r"ours & qgoft & minilm\_l6")]:  # fmt: skip
        out = tmp_path / f"glue.{fmt}"
        assert main(["glue", "--results", str(results), "--format", fmt, "--out", str(out)]) == 0
        text = out.read_text()
        assert expected in text and "72.00" in text and "left out: glue/rte qgoft" in text and ": 1 failed" in text
    assert "left out: glue/rte qgoft (minilm_l6): 1 failed" in capsys.readouterr().err

    assert (
        main(["glue", "--results", str(results), "--paper", "none", "--plot", str(tmp_path / "p" / "glue")])
        == 0
    )
    printed = capsys.readouterr().out
    assert "| ours | qgoft |" in printed and "| paper |" not in printed
    assert (tmp_path / "p" / "glue.png").stat().st_size > 0 and (
        tmp_path / "p" / "glue.svg"
    ).stat().st_size > 0


def test_main_vtab_metric_and_empty_results(write, tmp_path, capsys):
    write("vtab/dtd", "goft", 1, {"accuracy": 0.6}, model="tiny_vit", last={"accuracy": 0.5})
    assert (
        main(["vtab", "--results", str(tmp_path / "results"), "--select", "last", "--paper", "none"])
        == 0
    )
    assert "50.00" in capsys.readouterr().out
    assert main(["vtab", "--results", str(tmp_path / "results"), "--vtab-metric", "last", "--paper", "none"]) == 0
    assert "50.00" in capsys.readouterr().out  # --select's earlier name on this table
    assert main(["vtab", "--results", str(tmp_path / "results"), "--paper", "none"]) == 0
    assert "60.00" in capsys.readouterr().out  # the best epoch by default
    (tmp_path / "empty").mkdir()
    assert main(["squad", "--results", str(tmp_path / "empty")]) == 0
    captured = capsys.readouterr()
    assert "no completed records" in captured.err and "| paper | qgoft |" in captured.out


def test_perf_reader_and_table(tmp_path, capsys):
    perf = tmp_path / "results" / "perf"
    perf.mkdir(parents=True)
    (perf / "h100.json").write_text(json.dumps({
        "machine": "H100",
        "rows": [{"method": "lora_r8", "time_ms": 2.0, "peak_memory_mb": 900, "case": "d768"},
                 {"name": "qgoft", "step_time_ms": 5.0, "case": "d768"}],
    }))  # fmt: skip
    (perf / "cpu.json").write_text(
        json.dumps([{"method": "goft", "time_ms": 7.0, "machine": "cpu", "ratio_vs_lora": 3}])
    )
    (perf / "broken.json").write_text("{not json")

    rows = read_perf(perf).set_index("method")
    assert rows.loc["qgoft", "ratio_vs_lora"] == pytest.approx(2.5)  # filled from the LoRA row
    assert rows.loc["qgoft", "machine"] == "H100" and math.isnan(rows.loc["qgoft", "peak_memory_mb"])
    assert rows.loc["goft", "ratio_vs_lora"] == 3

    assert main(["perf", "--results", str(tmp_path / "results"), "--plot", str(tmp_path / "perf")]) == 0
    text = capsys.readouterr().out
    assert "| ours | H100 | d768 | qgoft | 1 | 5.00 | 2.50 | – |" in text
    assert "| paper | 2x RTX 3090 |" in text and "5.60" in text  # qGOFT 6.27 s / LoRA 1.12 s
    assert (tmp_path / "perf.png").exists() and (tmp_path / "perf.svg").exists()


def test_main_plot_tasks_writes_panels_or_names_the_problem(write, tmp_path, capsys):
    write("glue/rte", "goft", 1, {"accuracy": 0.6})
    results = str(tmp_path / "results")
    assert main(["glue", "--results", results, "--plot-tasks", str(tmp_path / "tasks")]) == 0
    assert (tmp_path / "tasks.png").stat().st_size > 1000

    (tmp_path / "empty").mkdir()
    assert main(["glue", "--results", str(tmp_path / "empty"), "--plot-tasks", str(tmp_path / "none")]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: no task of table")
    with pytest.raises(SystemExit) as exit_info:  # argparse's one-line usage error
        main(["runs", "--plot-tasks", str(tmp_path / "runs")])
    assert exit_info.value.code == 2 and ("runs does not take --plot-tasks " in capsys.readouterr().err)


def test_each_table_lists_and_takes_only_its_own_options(tmp_path, capsys):
    """``fu2023 --help`` shows --fu-table and not glue's --mnli; an option of another table is one usage line."""
    with pytest.raises(SystemExit) as exit_info:
        main(["fu2023", "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and "--fu-table" in out and "--plot-tasks" in out and "--mnli" not in out
    with pytest.raises(SystemExit) as exit_info:
        main(["glue", "--results", str(tmp_path), "--fu-table", "2"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "error: glue does not take --fu-table 2: `qgoft-bench-tables glue --help` lists its options" in err


def test_help_lists_every_sub_command(capsys):
    """status and methods are dispatched before this parser; its --help lists them with the tables (a new user
    found them only in the epilog)."""
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    listed = capsys.readouterr().out
    assert exit_info.value.code == 0
    for name in ("glue", "runs", "status", "methods"):
        assert f"\n    {name} " in listed
    with pytest.raises(SystemExit) as exit_info:  # this parser does not run them
        main(["status"])
    assert exit_info.value.code == 2 and "status is run by the qgoft-bench-tables command" in capsys.readouterr().err


def test_tables_cli_does_not_import_torch():
    # The report reads records only (docs/DESIGN.md); importing torch would cost seconds per table.
    code = "import sys, qgoft_bench.report.cli; print(sorted({'torch', 'transformers', 'timm'} & set(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_a_missing_results_folder_is_one_line(tmp_path, capsys):
    assert main(["runs", "--results", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --results") and "is not a folder" in err[0]


def test_broken_records_are_reported_with_their_paths(write, tmp_path, capsys):
    """A truncated record, one of another schema and a completed one without metrics are named, not dropped
    silently; benchmark JSON that is no record at all is passed over."""
    good = write("glue/rte", "goft", 1, {"accuracy": 0.6})
    folder = good.parent
    (folder / "seed2-trunc.json").write_text(good.read_text()[:200])
    (folder / "seed3-v9.json").write_text(json.dumps({**json.loads(good.read_text()), "schema_version": 9}))
    no_metrics = {**json.loads(good.read_text()), "run_id": "x"}
    del no_metrics["metrics"]
    (folder / "seed4-nometrics.json").write_text(json.dumps(no_metrics))
    (folder / "seed5-latin1.json").write_bytes(b"\xff\xfe\x00")
    no_score = json.loads(good.read_text())
    no_score["metrics"]["best"] = {}
    (folder / "seed6-noscore.json").write_text(json.dumps(no_score))
    edited = json.loads(good.read_text())  # a metric other than the headline that no table could read
    edited["metrics"]["best"]["f1"] = "abc"
    (folder / "seed7-edited.json").write_text(json.dumps(edited))
    (folder / "seed8-word.json").write_text(json.dumps({**json.loads(good.read_text()), "seed": "three"}))
    (tmp_path / "results" / "perf.json").write_text(json.dumps([{"method": "lora", "time_ms": 1}]))
    assert main(["runs", "--results", str(tmp_path / "results")]) == 0
    captured = capsys.readouterr()
    assert "skipped 7 file(s) that are not readable records" in captured.err
    assert "seed8-word.json: seed 'three' is not an integer" in captured.err
    assert "seed7-edited.json: completed, but metrics.best.f1 is 'abc', not a number" in captured.err
    assert "seed5-latin1.json: not UTF-8 text" in captured.err
    assert "seed6-noscore.json: completed, but metrics.best has no number for its headline metric" in captured.err
    assert "seed2-trunc.json: not JSON (truncated?)" in captured.err
    assert "seed3-v9.json: schema_version 9" in captured.err
    assert "seed4-nometrics.json: completed, but without metrics" in captured.err
    assert "perf.json" not in captured.err
    assert "| glue/rte | minilm_l6 | goft |" in captured.out


def test_runs_table_counts_what_did_not_complete(write, tmp_path, capsys):
    write("glue/rte", "goft", 1, {"accuracy": 0.6})
    write("glue/rte", "goft", 2, {"accuracy": 0.9}, status="diverged")
    write("glue/rte", "goft", 3, {"accuracy": 0.9}, status="failed")
    write("glue/rte", "lora_r8", 1, {"accuracy": 0.9}, status="diverged")
    assert main(["runs", "--results", str(tmp_path / "results")]) == 0
    out = capsys.readouterr().out
    goft = next(line for line in out.splitlines() if "| goft |" in line)
    assert "60.00" in goft and "| 1 |" in goft and "1 diverged, 1 failed" in goft  # only seed 1 in the mean
    lora = next(line for line in out.splitlines() if "| lora_r8 |" in line)
    assert "| 0 |" in lora and "1 diverged" in lora


def test_runs_table_does_not_count_a_completed_record_without_a_score(write, tmp_path, capsys):
    """Found by a new user: a completed record whose headline is null (a constant prediction's correlation) was left
    out of the mean but counted in n (n=3 over a mean of 2)."""
    for seed, value in ((1, 0.6), (2, 0.8), (3, None)):
        write("glue/stsb", "goft", seed, {"pearson": value}, last={"pearson": value})
    assert main(["runs", "--results", str(tmp_path / "results")]) == 0
    goft = next(line for line in capsys.readouterr().out.splitlines() if "| goft |" in line)
    assert "70.00" in goft and "| 2 |" in goft and "1 completed without a score" in goft


def test_by_a_key_no_record_has_is_one_line(write, tmp_path, capsys):
    write("glue/rte", "goft", 1, {"accuracy": 0.6}, config={"trainer": {"lr": 0.01}})
    write("glue/rte", "goft", 2, {"accuracy": 0.7})
    assert main(["runs", "--results", str(tmp_path / "results"), "--by", "trainer.lr"]) == 0
    out = capsys.readouterr().out
    assert "| 0.01 |" in out and "| (unset) |" in out  # the record without the key is kept, not dropped
    assert main(["runs", "--results", str(tmp_path / "results"), "--by", "trainer.lrr"]) == 2
    assert capsys.readouterr().err.strip() == (f"error: --by trainer.lrr: no record under {tmp_path / 'results'} has "
                                               "this config key")


def test_a_cell_that_mixes_configs_says_so(write, tmp_path, capsys):
    write("glue/rte", "goft", 1, {"accuracy": 0.6}, config={"trainer": {"lr": 0.01, "max_steps": 2}})
    write("glue/rte", "goft", 1, {"accuracy": 0.9}, config={"trainer": {"lr": 0.1, "max_steps": 2}}, run_id="other")
    assert main(["runs", "--results", str(tmp_path / "results")]) == 0
    assert ("mixed: glue/rte minilm_l6 goft averages 2 records with repeated seeds; their configs differ in "
            "trainer.lr: split them with --by KEY") in capsys.readouterr().err
    assert main(["runs", "--results", str(tmp_path / "results"), "--by", "trainer.lr"]) == 0
    assert "mixed:" not in capsys.readouterr().err

    # found by a new user: a newer record's added fields (a..i, absent from the older one) sorted first and hid the
    # setting that differs; keys both records have come first, and the rest is counted
    added = {key: 0 for key in "abcdefghi"}
    write("glue/rte", "goft", 1, {"accuracy": 0.7}, config={"trainer": {"lr": 0.2, "max_steps": 2}, **added},
          run_id="newer")
    assert main(["runs", "--results", str(tmp_path / "results")]) == 0
    assert ("averages 3 records with repeated seeds; their configs differ in trainer.lr, a, b, c, d, e, f, g and 2 "
            "more: split them with --by KEY") in capsys.readouterr().err


def test_plot_y_picks_the_column_or_names_the_problem(write, tmp_path, capsys, monkeypatch):
    """--plot-y copa plots one task (the one every method ran) instead of an average over different task sets."""
    from qgoft_bench.report import plots

    write("glue/rte", "qgoft", 1, {"accuracy": 0.7}, adapter_params=331_488)
    seen = []
    monkeypatch.setattr(plots, "plot_score_vs_params", lambda table, stem, y=None: seen.append(y) or [])
    results = str(tmp_path / "results")
    assert main(["glue", "--results", results, "--plot", str(tmp_path / "p"), "--plot-y", "rte"]) == 0
    assert seen == ["rte"]
    out = tmp_path / "t.md"
    assert main(["glue", "--results", results, "--plot", str(tmp_path / "p"), "--plot-y", "nope", "--out", str(out)]) == 2
    assert "--plot-y nope is not a column of the glue table" in capsys.readouterr().err
    assert not out.exists()  # found by a new user: the table was written before the argument was refused
    # found by a new user: a column none of our records has drew the paper's rows alone, without a word
    assert main(["glue", "--results", results, "--plot", str(tmp_path / "p"), "--plot-y", "cola"]) == 0
    assert ("warning: no row of ours has a value in column cola: the plot shows the paper's rows only"
            in capsys.readouterr().err)
    assert "warning" not in (main(["glue", "--results", results, "--plot", str(tmp_path / "p"), "--plot-y", "rte"])
                             or capsys.readouterr().err)


def test_a_plot_with_nothing_to_draw_or_nowhere_to_go_writes_nothing(write, tmp_path, capsys):
    """Found by a new user: --paper none on a column none of ours has wrote empty axes (with a warning about the
    paper's rows, which were not there); a path that cannot be written, or a folder where the file would go, was a
    traceback after the table was printed; --plot and --plot-tasks on one stem overwrote each other."""
    write("glue/rte", "qgoft", 1, {"accuracy": 0.7}, adapter_params=331_488)
    results = str(tmp_path / "results")
    stem = tmp_path / "plots" / "cola"
    assert main(["glue", "--results", results, "--paper", "none", "--plot", str(stem), "--plot-y", "cola"]) == 2
    captured = capsys.readouterr()
    assert "error: --plot: no row has both a cola value and adapter parameters" in captured.err
    assert captured.out == "" and not list(tmp_path.glob("plots/*"))
    (tmp_path / "a_file").write_text("")
    for flag, y in (("--out", []), ("--plot", ["--plot-y", "rte"]), ("--plot-tasks", [])):
        assert main(["glue", "--results", results, flag, str(tmp_path / "a_file" / "x"), *y]) == 1
        captured = capsys.readouterr()
        assert f"error: cannot write {tmp_path / 'a_file' / 'x'}" in captured.err and captured.out == ""
    # a folder where the file would go was an IsADirectoryError traceback (a new user's --out figs)
    (tmp_path / "figs" / "rte.svg").mkdir(parents=True)
    for args, folder in ((["--out", "figs"], "figs"), (["--plot", "figs/rte", "--plot-y", "rte"], "figs/rte.svg"),
                         (["--plot-tasks", "figs/rte.png"], "figs/rte.svg")):
        assert main(["glue", "--results", results, args[0], str(tmp_path / args[1]), *args[2:]]) == 1
        captured = capsys.readouterr()
        assert captured.err == f"error: cannot write {tmp_path / folder}: it is a folder; choose another path\n"
        assert captured.out == ""
    with pytest.raises(SystemExit) as exit_info:
        main(["glue", "--results", results, "--plot", str(stem), "--plot-tasks", f"{stem}.png"])
    assert exit_info.value.code == 2 and "--plot and --plot-tasks both write" in capsys.readouterr().err


def test_the_score_plot_says_what_it_cannot_show(write, tmp_path, capsys, monkeypatch):
    """Rows without adapter parameters (linear probing) are named as left out of the log axis; averages of ours
    over different tasks are called incomparable, on stderr and on the figure."""
    from qgoft_bench.report import plots

    write("glue/rte", "qgoft", 1, {"accuracy": 0.7}, adapter_params=82_800)
    write("glue/mrpc", "qgoft", 1, {"accuracy": 0.8}, adapter_params=82_800)
    write("glue/rte", "goft", 1, {"accuracy": 0.6}, adapter_params=20_700)
    write("glue/rte", "linear", 1, {"accuracy": 0.5}, adapter_params=0)
    results = str(tmp_path / "results")
    assert main(["glue", "--results", results, "--paper", "none", "--plot", str(tmp_path / "rte"), "--plot-y",
                 "rte"]) == 0
    err = capsys.readouterr().err
    assert "note: left out of the plot (no adapter parameters for its log axis): linear" in err
    assert "average different tasks" not in err
    drawn = []
    save = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, stem: drawn.append([t.get_text() for t in fig.axes[0].texts])
                        or save(fig, stem))
    assert main(["glue", "--results", results, "--paper", "none", "--plot", str(tmp_path / "avg")]) == 0
    assert "warning: our rows' avg values average different tasks" in capsys.readouterr().err
    assert any("average different tasks: compare points over the same tasks only" in t for t in drawn[0])


def test_plot_stems_are_file_stems(write, tmp_path, capsys):
    """A folder is refused in one line (it wrote <folder>.png beside it); a stem given as x.png writes x.png, not
    x.png.png; the runs table, which has no plot, does not take --plot."""
    write("glue/rte", "qgoft", 1, {"accuracy": 0.7}, adapter_params=331_488)
    results = str(tmp_path / "results")
    for flag in ("--plot", "--plot-tasks"):
        with pytest.raises(SystemExit) as exit_info:
            main(["glue", "--results", results, flag, f"{tmp_path}/"])
        assert exit_info.value.code == 2 and f"{flag} {tmp_path}/ is a folder: give a file stem" in (
            capsys.readouterr().err)
    assert main(["glue", "--results", results, "--plot-tasks", str(tmp_path / "fig.png")]) == 0
    assert sorted(p.name for p in tmp_path.glob("fig*")) == ["fig.png", "fig.svg"]
    with pytest.raises(SystemExit):
        main(["runs", "--results", results, "--plot", str(tmp_path / "runs")])
    assert "runs does not take --plot" in capsys.readouterr().err


def test_a_paper_table_counts_each_seed_once(write, tmp_path, capsys):
    # seed 1 twice (a re-run under another rate): the table keeps the newer record and says what it left out
    write("glue/rte", "goft", 1, {"accuracy": 0.5}, config={"trainer": {"lr": 0.01}},
          created_at="2026-01-01T00:00:00+00:00")
    write("glue/rte", "goft", 1, {"accuracy": 0.7}, config={"trainer": {"lr": 0.1}}, run_id="other",
          created_at="2026-01-02T00:00:00+00:00")
    write("glue/rte", "goft", 2, {"accuracy": 0.9}, config={"trainer": {"lr": 0.1}})
    assert main(["glue", "--results", str(tmp_path / "results"), "--paper", "none"]) == 0
    captured = capsys.readouterr()
    goft = next(line for line in captured.out.splitlines() if "| goft |" in line)
    assert "80.00" in goft and "| 2 |" in goft  # (70 + 90) / 2 over 2 seeds, not (50 + 70 + 90) / 3 over 3
    assert ("left out: glue/rte goft (minilm_l6): 1 older record(s) of a seed that a newer record repeats; configs "
            "differ in trainer.lr (qgoft-bench-tables runs --by KEY shows them apart)") in captured.err


def test_seeds_of_different_configs_are_named_not_averaged_silently(write, tmp_path, capsys):
    """Found in review: `method=delora method.delora_lambda=3` files under delora_r8 like PEFT's lambda 15; seeds of
    the two with no seed in common were averaged into one cell without a word. Each table now says which settings
    the cell's seeds differ in; a key only a newer record has (a field added since) is not a change."""
    write("glue/rte", "delora_r8", 1, {"accuracy": 0.5}, config={"method": {"delora_lambda": 15}})
    write("glue/rte", "delora_r8", 2, {"accuracy": 0.8}, config={"method": {"delora_lambda": 3}})
    write("glue/rte", "goft", 1, {"accuracy": 0.6}, config={"trainer": {"lr": 0.01}})
    write("glue/rte", "goft", 2, {"accuracy": 0.6}, config={"trainer": {"lr": 0.01, "added": 1}})
    results = str(tmp_path / "results")
    assert main(["glue", "--results", results, "--paper", "none", "--out", str(tmp_path / "t.md")]) == 0
    note = ("mixed: glue/rte delora_r8 (minilm_l6) averages 2 seeds whose configs differ in method.delora_lambda: "
            "point --results at one experiment's folder")
    assert note in capsys.readouterr().err
    assert note in (tmp_path / "t.md").read_text()  # a footnote of the table itself, not only a console line
    assert main(["runs", "--results", results]) == 0
    err = capsys.readouterr().err
    assert ("mixed: glue/rte minilm_l6 delora_r8 averages 2 seeds whose configs differ in method.delora_lambda: split "
            "them with --by KEY") in err
    assert "goft" not in err
    assert main(["runs", "--results", results, "--by", "method.delora_lambda"]) == 0
    assert "mixed:" not in capsys.readouterr().err
    # --by twice adds both keys (the second replaced the first)
    assert main(["runs", "--results", results, "--by", "trainer.lr", "--by", "method.delora_lambda"]) == 0
    assert "| task | model | method | trainer.lr | method.delora_lambda |" in capsys.readouterr().out
