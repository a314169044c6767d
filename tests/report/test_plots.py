"""Figures are written as PNG and SVG and are not empty."""

import numpy as np
import pandas as pd
import pytest

from qgoft_bench.report.plots import plot_perf, plot_score_vs_params, plot_task_panels, task_panels
from qgoft_bench.report.tables import build_perf_table, build_table, collect, table_spec


def test_score_vs_params_plot(write, tmp_path):
    write("squad/v1", "qgoft", 1, {"exact_match": 0.80, "f1": 0.88}, adapter_params=331_488)
    table = build_table(table_spec("squad"), collect(tmp_path / "results"))
    paths = plot_score_vs_params(table, tmp_path / "fig" / "squad")
    assert [p.suffix for p in paths] == [".png", ".svg"]
    assert all(p.stat().st_size > 1000 for p in paths)


def test_perf_plot(tmp_path):
    perf = pd.DataFrame(
        [["cpu", "d768", "lora_r8", 10.0, 1.0, 100.0], ["cpu", "d768", "qgoft", 40.0, 4.0, float("nan")]],
        columns=["machine", "case", "method", "time_ms", "ratio_vs_lora", "peak_memory_mb"],
    )
    paths = plot_perf(build_perf_table(perf), tmp_path / "perf")
    assert all(p.exists() and p.stat().st_size > 1000 for p in paths)


def test_task_panels_hold_our_seed_mean_and_std_per_task(write, tmp_path):
    for seed, accuracy in ((1, 0.60), (2, 0.64)):
        write("glue/rte", "goft", seed, {"accuracy": accuracy})
    write("glue/rte", "lora_r8", 1, {"accuracy": 0.58}, adapter_params=331_776)
    write("glue/mrpc", "goft", 1, {"accuracy": 0.80})
    table = build_table(table_spec("glue"), collect(tmp_path / "results"), paper="matched")

    panels = task_panels(table)

    assert list(panels) == ["rte", "mrpc"]  # the table's column order; tasks without our runs have no panel
    rte = panels["rte"].set_index("method")
    assert rte.loc["goft", "mean"] == pytest.approx(62.0)
    assert rte.loc["goft", "std"] == pytest.approx(np.std([60.0, 64.0], ddof=1))
    assert rte.loc["lora_r8", "std"] == 0.0  # one seed: no bar rather than a missing point
    assert list(panels["mrpc"]["method"]) == ["goft"]  # the paper's rows are never drawn
    # n counts each task's seeds: goft has 2 on RTE and 1 on MRPC, where its table row only says "1-2"
    assert (rte.loc["goft", "n"], panels["mrpc"]["n"].tolist()) == (2, [1])
    paths = plot_task_panels(table, tmp_path / "fig" / "tasks")
    assert all(p.stat().st_size > 1000 for p in paths)


def test_task_panels_refuse_a_table_without_our_results(tmp_path):
    table = build_table(table_spec("glue"), collect(tmp_path / "results"))  # the paper's rows only
    with pytest.raises(ValueError, match="no task"):
        plot_task_panels(table, tmp_path / "tasks")
