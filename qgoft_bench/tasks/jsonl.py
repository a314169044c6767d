"""JSON Lines data files (SuperGLUE's official files, Fu et al.'s split files), read line by line and checked."""

import json
from pathlib import Path

from qgoft_bench.errors import DataError


def read_jsonl(path: Path, missing_hint: str = "check the data folder") -> list[tuple[str, dict]]:
    """(``FILE:LINE``, record) for every non-blank line of a JSON Lines file; one-line errors otherwise."""
    if not path.is_file():
        raise DataError(f"data file {path} is missing: {missing_hint}")
    rows = []
    for n, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8-sig" if n == 1 else "utf-8")  # a byte-order mark is allowed
        except UnicodeDecodeError as err:
            raise DataError(f"{path}:{n}: byte 0x{raw[err.start]:02x} is not UTF-8; re-save the file as UTF-8") from None
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{n}: not a JSON object ({err.msg}, column {err.colno}); fix the line") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{n}: not a JSON object; fix the line")
        rows.append((f"{path}:{n}", record))
    if not rows:
        raise DataError(f"{path} has no examples")
    return rows
