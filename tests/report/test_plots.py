"""Figures are written as PNG and SVG and are not empty."""

import pandas as pd

from qgoft_bench.report.plots import plot_perf, plot_score_vs_params
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
