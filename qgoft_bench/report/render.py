"""Render a ``tables.Table`` as Markdown, CSV or LaTeX.

Numbers print with two decimals; a cell with a std prints ``mean ± std`` (CSV: a ``<column>_std`` column);
missing cells print ``–`` (Markdown), empty (CSV) or ``--`` (LaTeX), never 0. A marked cell (an average over an
incomplete row) gets a trailing ``*`` and a footnote naming the row; CSV keeps numbers clean and puts the same
text in a ``notes`` column.
"""

import io
import math

from qgoft_bench.report.tables import Table

FORMATS = ("md", "csv", "latex")
MISSING = {"md": "–", "csv": "", "latex": "--"}
_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}  # fmt: skip


def format_params(count: float) -> str:
    """Adapter parameters the way the papers print them: ``184M``, ``0.331M``, ``0.0184M``; ``0`` stays 0."""
    if count is None or (isinstance(count, float) and math.isnan(count)):
        return ""
    if count == 0:
        return "0"
    millions = count / 1e6
    return f"{millions:.0f}M" if millions >= 10 else f"{millions:.3g}M"


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _label(column: str, value: object) -> str:
    if column == "params":
        return format_params(value)
    if column == "params_ratio":
        return "" if _is_missing(value) else f"{value:.3g}%"
    return "" if _is_missing(value) else str(value)


def _cell_text(table: Table, row: int, column: str, fmt: str) -> str:
    value = table.frame.iloc[row][column]
    if _is_missing(value):
        return MISSING[fmt]
    text = f"{value:.2f}"
    std = table.std.iloc[row][column]
    if not _is_missing(std):
        text += rf" $\pm$ {std:.2f}" if fmt == "latex" else f" ± {std:.2f}"
    if (row, column) in table.marks:
        text += "$^*$" if fmt == "latex" else "*"
    return text


def _mark_notes(table: Table) -> list[str]:
    """One footnote per marked row: its source, method and model, then each marked column's note."""
    by_row: dict[int, list[str]] = {}
    for (row, column), note in sorted(table.marks.items()):
        by_row.setdefault(row, []).append(f"{column} {note}")
    notes = []
    for row, parts in by_row.items():
        labels = table.frame.iloc[row]
        who = " ".join(str(labels[c]) for c in ("source", "method", "model") if c in labels)
        notes.append(f"* {who}: " + "; ".join(parts))
    return notes


def _rows(table: Table, fmt: str) -> list[list[str]]:
    rows = []
    for position in range(len(table.frame)):
        record = table.frame.iloc[position]
        labels = [_label(c, record[c]) for c in table.label_columns]
        rows.append(labels + [_cell_text(table, position, c, fmt) for c in table.value_columns])
    return rows


def to_markdown(table: Table) -> str:
    """A GitHub Markdown table under a ``###`` title, footnotes below."""
    header = table.label_columns + table.value_columns
    align = ["---"] * len(table.label_columns) + ["--:"] * len(table.value_columns)
    lines = [f"### {table.title}", "", "| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in _rows(table, "md")]
    notes = table.footnotes + _mark_notes(table)
    if notes:
        lines += [""] + [f"{note}  " for note in notes]
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    """Numbers with 2 decimals, ``<column>_std`` beside columns that have stds, notes per row, ``#`` header."""
    frame = table.frame.copy()
    if "params" in frame:
        frame["params"] = frame["params"].astype(float).round().astype("Int64")  # counts, not 73632.0
    for column in table.value_columns:
        frame[column] = frame[column].round(2)
        if table.std[column].notna().any():
            frame.insert(frame.columns.get_loc(column) + 1, f"{column}_std", table.std[column].round(2))
    notes: dict[int, list[str]] = {}
    for (row, column), note in sorted(table.marks.items()):
        notes.setdefault(row, []).append(f"{column} {note}")
    frame["notes"] = ["; ".join(notes.get(i, [])) for i in range(len(frame))]
    buffer = io.StringIO()
    for line in [table.title, *table.footnotes]:
        buffer.write(f"# {line}\n")
    frame.to_csv(buffer, index=False, na_rep=MISSING["csv"], float_format="%.2f", lineterminator="\n")
    return buffer.getvalue()


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def to_latex(table: Table) -> str:
    """A booktabs ``tabular`` (title as a comment), footnotes as small paragraphs after it."""
    header = [_latex_escape(c) for c in table.label_columns + table.value_columns]
    spec = "l" * len(table.label_columns) + "r" * len(table.value_columns)
    lines = [f"% {table.title}", rf"\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(header) + r" \\"]
    lines.append(r"\midrule")
    n_labels = len(table.label_columns)
    for row in _rows(table, "latex"):
        # label text is escaped; value cells already hold LaTeX ($\pm$, $^*$) and only digits otherwise
        cells = [_latex_escape(c) for c in row[:n_labels]] + row[n_labels:]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    for note in table.footnotes + _mark_notes(table):
        lines.append(rf"\par{{\footnotesize {_latex_escape(note)}}}")
    return "\n".join(lines) + "\n"


def render(table: Table, fmt: str = "md") -> str:
    """``table`` as ``fmt`` (md, csv or latex)."""
    renderers = {"md": to_markdown, "csv": to_csv, "latex": to_latex}
    if fmt not in renderers:
        raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    return renderers[fmt](table)
