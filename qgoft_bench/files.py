"""File contents as identities: the one sha256 routine the models (pinned checkpoints), the tasks (data
fingerprints) and the saved adapters share."""

import hashlib
from pathlib import Path
from typing import Any, BinaryIO


def update_with_file(digest: Any, f: BinaryIO) -> None:
    """Feed the rest of the open binary file ``f`` to ``digest`` (a ``hashlib`` object) in 1 MiB chunks."""
    for chunk in iter(lambda: f.read(1 << 20), b""):
        digest.update(chunk)


def sha256_file(path: str | Path) -> str:
    """The hex sha256 of the file at ``path``; raises ``OSError`` when it cannot be read."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        update_with_file(digest, f)
    return digest.hexdigest()
