"""Files written whole or not at all: to a hidden temporary name beside the target, then
renamed over it, so a reader (or a rerun) never sees half a file.

A writer killed mid-write leaves its temporary file behind. Its name says which process
on which machine wrote it, so the next write into that folder removes the files of
writers that are gone (and of any writer after a day), and a resumed study removes
every one of them before it starts writing again."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path

__all__ = ["TMP_SUFFIX", "remove_leftovers", "write_atomically"]

#: The suffix of a write in progress; readers skip hidden files that end in it.
TMP_SUFFIX = ".tmp"
#: A temporary file this old is a leftover whoever wrote it: no write takes a day.
_STALE_S = 24 * 3600
_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", platform.node()) or "host"
# .<name>.<uuid hex>[.<pid>@<host>].tmp, and the remote mirror's .<name>.pull.tmp
_LEFTOVER = re.compile(
    rf"^\..+\.(?:[0-9a-f]{{32}}(?:\.(?P<pid>\d+)@(?P<host>[A-Za-z0-9_-]+))?|pull)"
    rf"{re.escape(TMP_SUFFIX)}$"
)


def write_atomically(path: Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` for a hidden temporary path in ``path``'s folder (created if
    needed), then rename it to ``path``; the temporary file never outlives a failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.{os.getpid()}@{_HOST}{TMP_SUFFIX}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):  # a read-only folder: the write's error is the one
            tmp.unlink(missing_ok=True)
    remove_leftovers(path.parent)
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def _is_leftover(path: Path, everything: bool) -> bool:
    found = _LEFTOVER.match(path.name)
    if found is None:
        return False
    if everything:
        return True
    try:
        if time.time() - path.stat().st_mtime > _STALE_S:
            return True
    except FileNotFoundError:
        return False
    pid = found.group("pid")
    return pid is not None and found.group("host") == _HOST and not _alive(int(pid))


def remove_leftovers(folder: Path, everything: bool = False, recursive: bool = False) -> int:
    """Remove the temporary files that killed writers left in ``folder`` (and below it,
    with ``recursive``); with ``everything``, those of every writer, as when nothing else
    writes there. Returns how many were removed; a folder that cannot be read is skipped."""
    removed = 0
    try:
        candidates = list(folder.rglob(f".*{TMP_SUFFIX}") if recursive else folder.iterdir())
    except OSError:
        return 0
    for path in candidates:
        if _is_leftover(path, everything) and path.is_file():
            with contextlib.suppress(OSError):
                path.unlink()
                removed += 1
    return removed
