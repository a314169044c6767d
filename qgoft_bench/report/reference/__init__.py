"""The papers' published tables as package data, and their loader.

Each CSV starts with ``#`` comment lines (source and meaning of the numbers), then a header row; ``method`` holds the
method label that our records use (``lora_r2``, ``oft_b8``, ``qgoft``, ...). Values are percent as printed.
"""

import io
import math
import re
from dataclasses import dataclass
from importlib import resources

import pandas as pd

# Paper parameter counts are printed with a unit suffix ("184M", "0.33M"); these are the multipliers.
_UNITS = {"": 1.0, "K": 1e3, "M": 1e6, "B": 1e9}
_COUNT = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([KMB]?)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class ReferenceTable:
    """One paper table: ``frame`` (one row per method, indexed by method label) and its comment lines."""

    name: str
    frame: pd.DataFrame
    comments: tuple[str, ...]

    @property
    def source(self) -> str:
        """The citation: the first comment line without its ``Source:`` prefix."""
        first = self.comments[0] if self.comments else self.name
        return first.removeprefix("Source:").strip()


def reference_names() -> list[str]:
    """File stems of the bundled tables (``glue_deberta_v3_base``, ...)."""
    folder = resources.files(__name__)
    return sorted(p.name.removesuffix(".csv") for p in folder.iterdir() if p.name.endswith(".csv"))


def load_reference(name: str) -> ReferenceTable:
    """Load ``<name>.csv``: comment lines (``#`` stripped) and the table indexed by ``method``."""
    text = resources.files(__name__).joinpath(f"{name}.csv").read_text()
    lines = text.splitlines()
    comments = tuple(line.lstrip("#").strip() for line in lines if line.startswith("#"))
    body = [line for line in lines if line.strip() and not line.startswith("#")]
    # Read everything as text first: "-" and "0.25%" are cells the paper printed, parsed where they are used.
    frame = pd.read_csv(io.StringIO("\n".join(body)), dtype=str).set_index("method")
    numeric = frame.apply(pd.to_numeric, errors="coerce")
    # A column is numeric when every printed cell parses; keep text columns (params "0.33M") as text.
    for column in frame.columns:
        if numeric[column].notna().sum() == frame[column].notna().sum():
            frame[column] = numeric[column]
    return ReferenceTable(name=name, frame=frame, comments=comments)


def parse_count(text: object) -> float:
    """``"0.33M"`` -> 330000.0, ``"184M"`` -> 1.84e8; NaN for anything else ("-", empty)."""
    if isinstance(text, int | float):
        return float(text)
    match = _COUNT.match(str(text))
    if not match:
        return math.nan
    return float(match.group(1)) * _UNITS[match.group(2).upper()]


def parse_percent(text: object) -> float:
    """``"0.25%"`` -> 0.25 (percent units kept); NaN when not a percentage."""
    value = str(text).strip()
    if not value.endswith("%"):
        return math.nan
    try:
        return float(value[:-1])
    except ValueError:
        return math.nan


def paper_params(ref: ReferenceTable) -> pd.Series:
    """Adapter parameter counts by method from whichever params column the table prints (NaN if none)."""
    frame = ref.frame
    if "params" in frame:
        return frame["params"].map(parse_count)
    if "params_m" in frame:
        return frame["params_m"].astype(float) * 1e6
    return pd.Series(math.nan, index=frame.index)
