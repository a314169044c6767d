"""File contents as identities: the one sha256 routine the models (pinned checkpoints), the tasks (data
fingerprints) and the saved adapters share."""

import hashlib
import os
from functools import cache
from pathlib import Path
from typing import Any, BinaryIO


def update_with_file(digest: Any, f: BinaryIO) -> None:
    """Feed the rest of the open binary file ``f`` to ``digest`` (a ``hashlib`` object) in 1 MiB chunks."""
    for chunk in iter(lambda: f.read(1 << 20), b""):
        digest.update(chunk)


def sha256_file(path: str | Path) -> str:
    """The hex sha256 of the file at ``path``, read once per process while its size and modification time stay the
    same (a sweep checks a pinned model, and a run's id and record name a scored adapter, without reading the file
    again); raises ``OSError`` when it cannot be read."""
    stat = os.stat(path)
    return _sha256(Path(path).resolve(), stat.st_size, stat.st_mtime_ns)


@cache
def _sha256(path: Path, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        update_with_file(digest, f)
    return digest.hexdigest()
