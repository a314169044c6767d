"""Markdown, CSV and LaTeX output from generated records: numbers, stds, missing cells and marks."""

import io

import pandas as pd
import pytest

from qgoft_bench.report.render import format_params, render
from qgoft_bench.report.tables import build_table, collect, table_spec


@pytest.fixture
def glue_table(write, tmp_path):
    for seed, accuracy in [(1, 0.80), (2, 0.83), (3, 0.89)]:
        write("glue/rte", "goft", seed, {"accuracy": accuracy})
    write("glue/sst2", "goft", 1, {"accuracy": 0.9})
    return build_table(table_spec("glue"), collect(tmp_path / "results"), paper="matched")


def test_markdown(glue_table):
    text = render(glue_table, "md")
    ours = next(line for line in text.splitlines() if line.startswith("| ours"))
    cells = [c.strip() for c in ours.strip("|").split("|")]
    assert cells[:5] == ["ours", "goft", "minilm_l6", "0.0829M", "1-3"]
    assert "84.00 ± 4.58" in cells and "90.00" in cells and "87.00*" in cells  # std: sqrt(0.0021) x 100
    assert cells.count("–") == 6  # mnli, cola, qqp, qnli, mrpc, stsb
    assert "| paper | goft | deberta_v3_base | 0.08M | 5 | 90.01 |" in text
    assert "-2.28" in text  # rte: 84.00 - 86.28
    assert "* ours goft minilm_l6: avg average over 2 of 8 tasks" in text


def test_csv(glue_table):
    text = render(glue_table, "csv")
    assert text.startswith("# GLUE dev")
    frame = pd.read_csv(io.StringIO(text), comment="#")
    ours = frame[frame["source"] == "ours"].iloc[0]
    assert ours["rte"] == 84.0 and ours["avg"] == 87.0 and ours["params"] == 82_872
    assert pd.isna(ours["cola"])  # empty cell, never 0
    assert ours["notes"] == "avg average over 2 of 8 tasks"
    assert ours["rte_std"] == 4.58
    assert "sst2_std" not in frame and "mnli_std" not in frame  # one seed or none: no std column


def test_latex(glue_table):
    text = render(glue_table, "latex")
    assert r"\begin{tabular}" in text and r"\bottomrule" in text
    ours = next(line for line in text.splitlines() if line.startswith("ours"))
    assert r"minilm\_l6" in ours and r"84.00 $\pm$ 4.58" in ours and r"87.00$^*$" in ours and " -- " in ours
    assert ours.endswith(r"\\")


def test_std_cells_in_every_format(write, tmp_path):
    for seed, value in [(1, 0.60), (2, 0.62)]:
        write("glue/cola", "sam", seed, {"matthews_test": value}, model="roberta_base")
    table = build_table(table_spec("fu2023"), collect(tmp_path / "results"), paper="none")
    assert "61.00 ± 1.41" in render(table, "md")
    assert r"61.00 $\pm$ 1.41" in render(table, "latex")
    frame = pd.read_csv(io.StringIO(render(table, "csv")), comment="#")
    assert frame.loc[0, "cola_std"] == 1.41


def test_format_params_and_unknown_format(glue_table):
    assert [format_params(n) for n in (184e6, 331_488, 18_408, 0)] == ["184M", "0.331M", "0.0184M", "0"]
    with pytest.raises(ValueError, match="unknown format"):
        render(glue_table, "html")
