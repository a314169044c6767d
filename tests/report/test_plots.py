"""Figures: what each draws (read back from the matplotlib figure), written as PNG and SVG."""

import itertools

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text

from qgoft_bench.report.plots import (
    place_labels,
    plot_perf,
    plot_score_vs_params,
    plot_task_panels,
    task_panels,
)
from qgoft_bench.report.tables import build_perf_table, build_table, collect, table_spec


@pytest.fixture
def figures(monkeypatch) -> list:
    """Every figure the plots save in the test, in order, read back before it is closed."""
    from qgoft_bench.report import plots

    drawn = []
    save = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, stem: drawn.append(fig) or save(fig, stem))
    return drawn


def test_score_vs_params_plot_places_each_row_at_its_parameters_and_score(write, tmp_path, figures):
    """Our point sits at (adapter params, our score), labelled with its method; the paper's rows are drawn apart."""
    write("squad/v1", "qgoft", 1, {"exact_match": 0.80, "f1": 0.88}, adapter_params=331_488)
    table = build_table(table_spec("squad"), collect(tmp_path / "results"))
    paths = plot_score_vs_params(table, tmp_path / "fig" / "squad", y="f1")
    assert [p.suffix for p in paths] == [".png", ".svg"]
    assert all(p.stat().st_size > 1000 for p in paths)

    (ax,) = figures[0].axes
    ours, paper = ax.collections  # one scatter per source, ours first
    assert ours.get_offsets().tolist() == [[331_488.0, 88.0]]
    assert ax.get_xscale() == "log" and ax.get_ylabel() == "f1 (%)"
    paper_rows = table.frame[(table.frame["source"] == "paper") & table.frame["f1"].notna()]
    assert len(paper.get_offsets()) == int((paper_rows["params"].astype(float) > 0).sum()) > 0
    labels = [text.get_text() for text in ax.texts]
    assert "qgoft" in labels and len(labels) == 1 + len(paper.get_offsets())


def test_score_vs_params_on_one_task_draws_our_seed_spread_and_short_counts(write, tmp_path, figures):
    """On one task's column our points carry ± one std over seeds, and a point with fewer seeds than the others
    says how many (a one-seed lead must not read like a three-seed one)."""
    for seed, accuracy in ((1, 0.60), (2, 0.64), (3, 0.62)):
        write("glue/rte", "goft", seed, {"accuracy": accuracy})
    write("glue/rte", "frod_s0.01", 1, {"accuracy": 0.70}, adapter_params=207_360)
    table = build_table(table_spec("glue"), collect(tmp_path / "results"), paper="none")
    plot_score_vs_params(table, tmp_path / "rte", y="rte")

    (ax,) = figures[0].axes
    _, bars = ax.collections  # the scatter, then the error bars
    spans = sorted((segment[0][1], segment[1][1]) for segment in bars.get_segments())
    spread = np.std([60.0, 64.0, 62.0], ddof=1)
    assert spans[0] == (pytest.approx(62.0 - spread), pytest.approx(62.0 + spread))
    assert spans[1] == (70.0, 70.0)  # one seed: no spread
    assert sorted(text.get_text() for text in ax.texts) == ["frod_s0.01 (n=1)", "goft"]
    assert ax.get_ylabel() == "rte: accuracy (%)"


def test_a_figure_drawn_again_from_the_same_records_is_the_same_bytes(write, tmp_path):
    """A committed figure redrawn from unchanged records shows no diff: no date in the SVG, no random element ids."""
    for seed, accuracy in ((1, 0.60), (2, 0.64)):
        write("glue/rte", "goft", seed, {"accuracy": accuracy})
    table = build_table(table_spec("glue"), collect(tmp_path / "results"), paper="none")
    first = plot_score_vs_params(table, tmp_path / "a" / "rte", y="rte")
    second = plot_score_vs_params(table, tmp_path / "b" / "rte", y="rte")
    assert "<path id=" in first[1].read_text()  # the SVG has hashed ids to keep stable
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name


def test_labels_of_crowded_points_do_not_overlap(write, tmp_path, figures):
    """Three methods within 0.1 points at one budget (and a pair at another): every label is drawn, none overlaps
    another, and each stays near its point. The pair-only placement before printed the third label over the
    first."""
    crowd = {"lora_r8": 0.860, "delora_r8_lambda3": 0.8595, "boft_b8_m1": 0.859}
    for method, pearson in crowd.items():
        write("glue/stsb", method, 1, {"pearson": pearson, "spearman": pearson}, adapter_params=331_776)
    for method, pearson in {"psoft_r32": 0.849, "road_1": 0.850}.items():
        write("glue/stsb", method, 1, {"pearson": pearson, "spearman": pearson}, adapter_params=20_000)
    write("glue/stsb", "full", 1, {"pearson": 0.80, "spearman": 0.80}, adapter_params=22_000_000)
    table = build_table(table_spec("glue"), collect(tmp_path / "results"), paper="none")
    plot_score_vs_params(table, tmp_path / "stsb", y="stsb")

    (ax,) = figures[0].axes
    renderer = FigureCanvasAgg(figures[0]).get_renderer()  # the saved figure is closed: a canvas to measure on
    labels = {text.get_text(): text for text in ax.texts}
    assert set(labels) == {*crowd, "psoft_r32", "road_1", "full"}
    for label in labels.values():
        label.update_positions(renderer)
    boxes = {name: Text.get_window_extent(label, renderer) for name, label in labels.items()}  # text, no leader
    for first, second in itertools.combinations(boxes, 2):
        assert not boxes[first].overlaps(boxes[second]), (first, second)
    # near: within 60 display points of the labelled point
    frame = table.frame.set_index("method")
    for name, box in boxes.items():
        point = ax.transData.transform((float(frame.loc[name, "params"]), float(frame.loc[name, "stsb"])))
        gap = np.hypot(*(np.clip(point, box.min, box.max) - point))
        assert gap < 60 * figures[0].dpi / 72, name


def test_a_label_keeps_off_a_note_and_inside_the_axes():
    """A point under the corner note and a point at the right edge: each label goes where it overlaps neither the
    note nor the frame (the first slot, up and right, would have done both)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3))
    ax.scatter([1.0, 10.0], [0.0, 5.0])
    ax.set_xlim(0.9, 10.2)
    ax.set_ylim(-0.1, 5.2)
    note = ax.text(0.01, 0.01, "a note over the first point's first slot", transform=ax.transAxes, fontsize=7)
    low, edge = place_labels(ax, [("under the note", 1.0, 0.0), ("at the edge", 10.0, 5.0)])
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    boxes = []
    for label in (low, edge):
        label.update_positions(renderer)
        boxes.append(Text.get_window_extent(label, renderer))
    assert not boxes[0].overlaps(note.get_window_extent(renderer))
    assert all(frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
               for box in boxes)  # fmt: skip
    plt.close(fig)


def test_points_on_top_of_each_other_share_one_label():
    """Sparse methods at one budget all at the majority class are one point: one label naming each, not five
    labels fanned out on leader lines around it."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.scatter([1e5, 1e5, 2e5], [74.8, 74.8, 75.0])
    ax.set_xscale("log")
    labels = place_labels(ax, [("sam", 1e5, 74.8), ("random", 1e5, 74.8), ("lora", 2e5, 75.0)])
    assert [label.get_text() for label in labels] == ["sam, random", "lora"]
    assert [label.xy for label in labels] == [(1e5, 74.8), (2e5, 75.0)]
    plt.close(fig)


def test_perf_plot_bars_are_each_methods_time_and_memory(tmp_path, figures):
    """Our machine's group: one time bar and one memory bar per method at its value (a missing memory: no bar)."""
    perf = pd.DataFrame(
        [["cpu", "d768", "lora_r8", 10.0, 1.0, 100.0], ["cpu", "d768", "qgoft", 40.0, 4.0, float("nan")]],
        columns=["machine", "case", "method", "time_ms", "ratio_vs_lora", "peak_memory_mb"],
    )
    paths = plot_perf(build_perf_table(perf, paper="none"), tmp_path / "perf")
    assert all(p.exists() and p.stat().st_size > 1000 for p in paths)
    time_ax, memory_ax = figures[0].axes
    assert [t.get_text() for t in time_ax.get_xticklabels()] == ["lora_r8", "qgoft"]
    assert [bar.get_height() for bar in time_ax.patches] == [10.0, 40.0]
    assert [bar.get_height() for bar in memory_ax.patches] == [100.0, 0.0]


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


def test_the_star_note_is_drawn_only_with_a_starred_point(write, tmp_path, figures):
    """An average over fewer tasks than the paper's is starred, with the note; a task column whose only marks are the
    diff rows' (not drawn) has neither."""
    for seed, value in ((1, 0.60), (2, 0.62), (3, 0.61)):
        write("superglue/cb", "sam", seed, {"accuracy_macro_f1_mean_test": value}, model="roberta_base")
    table = build_table(table_spec("fu2023"), collect(tmp_path / "results"), paper="matched")
    assert any(column == "cb" for _, column in table.marks)  # the diff row: the seeds separate it from the paper
    for y, starred in (("avg", True), ("cb", False)):
        plot_score_vs_params(table, tmp_path / y, y=y)
        texts = [text.get_text() for text in figures[-1].axes[0].texts]
        assert ("sam*" in texts) == starred
        assert ("* average over fewer tasks than the paper's" in texts) == starred
