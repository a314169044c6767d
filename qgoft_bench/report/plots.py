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
    """Write ``fig`` to its ``figure_paths(stem)`` and close it. The same figure gives the same bytes: the SVG carries
    no date and its element ids are hashed with a fixed salt (matplotlib's default salt is random), so a committed
    figure redrawn from unchanged records shows no diff."""
    paths = figure_paths(stem)
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    with plt.rc_context({"svg.hashsalt": "qgoft-bench"}):
        for path in paths:
            fig.savefig(path, bbox_inches="tight", dpi=150, metadata={"Date": None})
    plt.close(fig)
    return paths


# where a label may go: (offset from its point in points, horizontal alignment). The first ring touches its point,
# right then left; the rings further out, above and below, carry a leader line to it.
_LABEL_RINGS = (
    (((4, 3), "left"), ((4, -9), "left"), ((-4, 3), "right"), ((-4, -9), "right")),
    (((6, 11), "left"), ((6, -17), "left"), ((-6, 11), "right"), ((-6, -17), "right")),
    (((8, 19), "left"), ((8, -25), "left"), ((-8, 19), "right"), ((-8, -25), "right"),
     ((10, 27), "left"), ((10, -33), "left"), ((-10, 27), "right"), ((-10, -33), "right")),
)  # fmt: skip
_LEADER = {"arrowstyle": "-", "color": "0.35", "lw": 0.6, "shrinkA": 0, "shrinkB": 3}
_MARKER_HALF = 4  # half a scatter marker's side (points; matplotlib's default marker is 6 points across)


def place_labels(ax: plt.Axes, labels: list[tuple[str, float, float]]) -> list[plt.Annotation]:
    """Write each ``(text, x, y)`` label (x, y in data units) in a ``_LABEL_RINGS`` slot where its box, measured as
    drawn, overlaps no other label, no text or legend already on the axes, no labelled point's marker and nothing
    outside the axes. Every label is offered the first ring before any takes a slot further out, so that a label
    with a leader line never sits in the spot beside another point that its own label wanted; a label with no free
    slot takes the one of least overlap. Greedy and deterministic, so that a figure is the same on every machine
    (adjustText, the usual label-repel library, stops after one second of wall time, and left two of three labels at
    one budget on top of each other). Labels of one (x, y) are joined into one, "a, b". Call it after everything that
    sets the axes' limits is drawn. Returns the annotations, one per point, in the order given.
    """
    merged: dict[tuple[float, float], list[str]] = {}  # points drawn on top of each other share one label
    for text, x, y in labels:
        merged.setdefault((x, y), []).append(text)
    labels = [(", ".join(texts), x, y) for (x, y), texts in merged.items()]
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
    taken = [text.get_window_extent(renderer) for text in ax.texts]
    if ax.get_legend():
        taken.append(ax.get_legend().get_window_extent(renderer))
    # measured without a leader line: the text's own box is what must not overlap
    probes = [ax.annotate(text, (x, y), xytext=(0, 0), textcoords="offset points", fontsize=7)
              for text, x, y in labels]  # fmt: skip

    def overlap(i: int, slot: tuple[tuple[int, int], str]) -> tuple[float, Bbox]:
        probes[i].set_position(slot[0])
        probes[i].set_horizontalalignment(slot[1])
        box = probes[i].get_window_extent(renderer)
        return sum(_area(box, other) for other in taken + markers) + _outside(box, frame), box

    chosen: dict[int, tuple[int, tuple[tuple[int, int], str]]] = {}  # label -> (ring, slot)
    for ring, slots in enumerate(_LABEL_RINGS):
        for i in range(len(labels)):
            if i in chosen:
                continue
            for slot in slots:
                area, box = overlap(i, slot)
                if area < 1:  # under a pixel² is rounding, not a collision
                    chosen[i] = (ring, slot)
                    taken.append(box)
                    break
    for i in range(len(labels)):  # no free slot: the least overlap
        if i not in chosen:
            options = [(*overlap(i, slot), ring, slot) for ring, slots in enumerate(_LABEL_RINGS) for slot in slots]
            _, box, ring, slot = min(options, key=lambda option: (option[0], option[2]))
            chosen[i] = (ring, slot)
            taken.append(box)
    annotations = []
    for i, (text, x, y) in enumerate(labels):
        probes[i].remove()
        ring, ((dx, dy), align) = chosen[i]
        leader = {"arrowprops": _LEADER} if ring else {}
        annotations.append(ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", ha=align,
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
    if notes:  # under the axes, where no point, label or legend can cover them
        ax.annotate("\n".join(notes), (0, 0), xycoords="axes fraction", xytext=(0, -32), textcoords="offset points",
                    va="top", fontsize=7)  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("adapter parameters (% of model)" if x == "params_ratio" else "adapter parameters")
    metric = table.metrics.get(y, y)  # glue's stsb column reads pearson
    ax.set_ylabel(f"{y} (%)" if metric == y else f"{y}: {metric} (%)")
    ax.set_title(table.title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    if ax.collections:
        ax.legend(loc="best", fontsize=8)  # before the labels, which keep off it
    place_labels(ax, labels)
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
