"""Files written whole or not at all: to a hidden temporary name beside the target, then
renamed over it, so a reader (or a rerun) never sees half a file."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

__all__ = ["TMP_SUFFIX", "write_atomically"]

#: The suffix of a write in progress; readers skip hidden files that end in it.
TMP_SUFFIX = ".tmp"


def write_atomically(path: Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` for a hidden temporary path in ``path``'s folder (created if
    needed), then rename it to ``path``; the temporary file never outlives a failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}{TMP_SUFFIX}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
