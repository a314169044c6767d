"""Figures from ``tables.Table``: score against adapter parameters, our seed spread per task, and step time /
peak memory per method.

Each figure is written twice, ``<stem>.png`` and ``<stem>.svg``. The Agg backend is selected before pyplot is
imported, so plotting works on machines without a display.
"""

import math
from pathlib import Path

import matplotlib
import pandas as pd

# before pyplot is imported: no display on servers and CI
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.transforms import Bbox

from qgoft_bench.report.tables import Table

# ours filled circles, the paper's open squares, as in the papers' accuracy-vs-parameters figures
_STYLE = {
    "ours": {"marker": "o", "color": "tab:blue"},
    "paper": {"marker": "s", "facecolors": "none", "edgecolors": "tab:red"},
}


def figure_paths(stem: str | Path) -> list[Path]:
    """The files a figure of ``stem`` is written to: ``<stem>.png`` and ``<stem>.svg`` (a stem given with either
    suffix loses it)."""
    stem = Path(stem)
    if stem.suffix in (".png", ".svg"):
        stem = stem.with_suffix("")
    return [stem.with_name(f"{stem.name}.{ext}") for ext in ("png", "svg")]


def _save(fig: plt.Figure, stem: str | Path) -> list[Path]:
    """Write ``fig`` to its ``figure_paths(stem)`` and close it."""
    paths = figure_paths(stem)
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    for path in paths:
        fig.savefig(path, bbox_inches="tight", dpi=150)
    plt.close(fig)
    return paths


# where a label may go, tried in order: (offset from its point in points, horizontal alignment). Right of the point
# first, then left, then a step further out above and below; the farther slots get a leader line.
_LABEL_SLOTS = (
    ((4, 3), "left"), ((4, -9), "left"), ((-4, 3), "right"), ((-4, -9), "right"),
    ((6, 11), "left"), ((6, -17), "left"), ((-6, 11), "right"), ((-6, -17), "right"),
    ((8, 19), "left"), ((8, -25), "left"), ((-8, 19), "right"), ((-8, -25), "right"),
)  # fmt: skip
_NEAR_SLOTS = 4  # the first four touch their point: no leader line
_LEADER = {"arrowstyle": "-", "color": "0.6", "lw": 0.5, "shrinkA": 0, "shrinkB": 3}
_MARKER_HALF = 4  # half a scatter marker's side (points; matplotlib's default marker is 6 points across)


def place_labels(ax: plt.Axes, labels: list[tuple[str, float, float]]) -> list[plt.Annotation]:
    """Write each ``(text, x, y)`` label (x, y in data units) in the first ``_LABEL_SLOTS`` slot where its box,
    measured as drawn, overlaps no text placed before it (labels, notes), no labelled point's marker and nothing
    outside the axes; where no slot is free, in the slot with the least overlap. Greedy and deterministic, so that a
    figure is the same on every machine (adjustText, the usual label-repel library, stops after one second of wall
    time, and left two of three labels at one budget on top of each other). Call it after everything that sets the
    axes' limits is drawn. Returns the annotations in the order given.
    """
    if not labels:
        return []
    figure = ax.figure
    figure.canvas.draw()  # limits and log scale final: the boxes measured now are the ones saved
    renderer = figure.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    half = _MARKER_HALF * figure.dpi / 72
    markers = [
        Bbox.from_extents(px - half, py - half, px + half, py + half)
        for px, py in ax.transData.transform([(x, y) for _, x, y in labels])
    ]
    placed = [text.get_window_extent(renderer) for text in ax.texts]  # notes written before the labels
    annotations = []
    for text, x, y in labels:
        # measured without a leader line: the text's own box is what must not overlap
        probe = ax.annotate(text, (x, y), xytext=_LABEL_SLOTS[0][0], textcoords="offset points", fontsize=7)
        scores = []  # (overlap in pixels², slot, box) per slot tried
        for slot, (offset, align) in enumerate(_LABEL_SLOTS):
            probe.set_position(offset)
            probe.set_horizontalalignment(align)
            box = probe.get_window_extent(renderer)
            overlap = sum(_area(box, other) for other in placed + markers) + _outside(box, frame)
            scores.append((overlap, slot, box))
            if overlap < 1:  # under a pixel² is rounding, not a collision
                break
        probe.remove()
        _, slot, box = min(scores, key=lambda score: score[:2])
        placed.append(box)
        offset, align = _LABEL_SLOTS[slot]
        leader = {"arrowprops": _LEADER} if slot >= _NEAR_SLOTS else {}  # a step away: a line to its point
        annotations.append(ax.annotate(text, (x, y), xytext=offset, textcoords="offset points", ha=align,
                                       fontsize=7, **leader))  # fmt: skip
    return annotations


def _area(a: Bbox, b: Bbox) -> float:
    """The area two display boxes share (pixels²)."""
    return max(0.0, min(a.x1, b.x1) - max(a.x0, b.x0)) * max(0.0, min(a.y1, b.y1) - max(a.y0, b.y0))


def _outside(box: Bbox, frame: Bbox) -> float:
    """The area of ``box`` outside ``frame`` (pixels²)."""
    return box.width * box.height - _area(box, frame)


def plot_score_vs_params(table: Table, stem: str | Path, y: str | None = None) -> list[Path]:
    """Scatter ``y`` (default the table's headline average) against adapter parameters on a log x axis.

    Rows without a positive parameter count or without a ``y`` value are left out (log axes have no 0; linear
    probing has no adapter). Points carry their method label (``*`` when the value averages fewer tasks
    than the paper's); the legend names the models. Where ``y`` is one task, our points carry a bar of ± one std
    over seeds and those with fewer seeds than the most any of ours has say ``(n=K)``, so that a lead can be read
    against the seed spread; where it is an average that our rows take over different tasks, a note says their
    points do not compare. Returns the PNG and SVG paths.
    """
    y = y or table.plot_y
    x = table.plot_x
    fig, ax = plt.subplots(figsize=(7, 4.5))
    marked = {row for row, column in table.marks if column == y}
    starred = False  # whether a drawn point carries the mark
    mixed = False
    drawn = table.frame[(table.frame[x].astype(float) > 0) & table.frame[y].notna()]
    labels = []  # (text, x, y) per point, placed once the axes are final
    for source, style in _STYLE.items():
        rows = drawn[drawn["source"] == source]
        if rows.empty:
            continue
        # the models go in the legend, so that ours on a small model is never read as the paper's
        models = ", ".join(dict.fromkeys(rows["model"].astype(str)))
        ax.scatter(rows[x].astype(float), rows[y].astype(float), **{**style, "label": f"{source} ({models})"})
        seeds = pd.Series(0, index=rows.index)
        if source == "ours" and y in table.task_columns:
            seeds = table.counts.loc[rows.index, y].astype(int)
            spread = table.std.loc[rows.index, y].astype(float).fillna(0.0)
            if spread.any():
                ax.errorbar(rows[x].astype(float), rows[y].astype(float), yerr=spread, fmt="none", capsize=3,
                            ecolor=style["color"], alpha=0.5, linewidth=1, label="ours: ± one std over seeds")
        elif source == "ours" and len(table.frame.loc[rows.index, table.task_columns].notna().drop_duplicates()) > 1:
            mixed = True  # our averages over different task sets: their points do not compare
        for position, row in rows.iterrows():
            star = table.frame.index.get_loc(position) in marked
            starred |= star
            name = f"{row['method']}*" if star else row["method"]
            if seeds[position] < seeds.max():
                name = f"{name} (n={seeds[position]})"
            labels.append((name, float(row[x]), float(row[y])))
    notes = ["* average over fewer tasks than the paper's"] if starred else []  # the diff rows' marks are not drawn
    if mixed:
        notes.append(f"our {y} values average different tasks: compare points over the same tasks only")
    if notes:
        ax.text(0.01, 0.01, "\n".join(notes), transform=ax.transAxes, fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("adapter parameters (% of model)" if x == "params_ratio" else "adapter parameters")
    metric = table.metrics.get(y, y)  # glue's stsb column reads pearson
    ax.set_ylabel(f"{y} (%)" if metric == y else f"{y}: {metric} (%)")
    ax.set_title(table.title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    place_labels(ax, labels)
    if ax.collections:
        ax.legend(loc="best", fontsize=8)
    return _save(fig, stem)


def task_panels(table: Table) -> dict[str, pd.DataFrame]:
    """Our rows per task column that has any of our values: method, mean, std (0 for one seed), the task's seed
    count n, in table order."""
    ours = table.frame["source"] == "ours"
    panels = {}
    for column in table.task_columns:
        present = ours & table.frame[column].notna()
        if present.any():
            panels[column] = pd.DataFrame({
                "method": table.frame.loc[present, "method"].astype(str),
                "mean": table.frame.loc[present, column].astype(float),
                "std": table.std.loc[present, column].fillna(0.0),
                "n": table.counts.loc[present, column].astype(int),
            }).reset_index(drop=True)  # fmt: skip
    return panels


def plot_task_panels(table: Table, stem: str | Path) -> list[Path]:
    """One panel per task: each method's mean with a bar of ± one std over seeds, so that the seed spread can be
    read against the gaps between methods. Only our rows: the paper's are on another model and scale."""
    panels = task_panels(table)
    if not panels:
        raise ValueError(f"no task of table {table.title!r} has our results to plot")
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.8), squeeze=False)
    for ax, (task, panel) in zip(axes[0], panels.items()):
        positions = range(len(panel))
        ax.errorbar(positions, panel["mean"], yerr=panel["std"], fmt="o", capsize=4, color="tab:blue")
        ax.set_xticks(positions, [f"{m} ({n})" for m, n in zip(panel["method"], panel["n"])],
                      rotation=45, ha="right", fontsize=8)  # fmt: skip
        ax.set_title(task, fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0][0].set_ylabel("dev score (%), mean ± std over seeds (n)")
    fig.suptitle(f"ours: {', '.join(dict.fromkeys(table.frame.loc[table.frame['source'] == 'ours', 'model']))}",
                 fontsize=10)  # fmt: skip
    fig.tight_layout()
    return _save(fig, stem)


def plot_perf(table: Table, stem: str | Path) -> list[Path]:
    """Bars of step time (ms) and peak memory (MB) per method, one bar group per machine and case.

    The paper's rows (seconds per batch on other hardware) are drawn too, so read bars within one group only.
    """
    labels = table.frame
    frame = labels.assign(group=labels["source"] + ": " + labels["machine"] + " " + labels["case"])
    groups = list(dict.fromkeys(frame["group"]))
    methods = list(dict.fromkeys(frame["method"]))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / max(len(groups), 1)
    for ax, column, label in zip(axes, ("time_ms", "peak_memory_mb"), ("step time (ms)", "peak memory (MB)")):
        for i, group in enumerate(groups):
            part = frame[frame["group"] == group].set_index("method")[column]
            heights = [float(part.get(m, math.nan)) for m in methods]
            positions = [j + (i - (len(groups) - 1) / 2) * width for j in range(len(methods))]
            ax.bar(positions, [0 if math.isnan(h) else h for h in heights], width, label=group)
        ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right")
        ax.set_ylabel(label)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(table.title, fontsize=10)
    return _save(fig, stem)
