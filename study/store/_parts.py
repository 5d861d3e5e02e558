"""Compacted files and which per-trial files they replace.

A compacted file (``trials/compacted-<stamp>.parquet``, likewise in ``history/``) holds the
rows of the files it merged, and names each of them in its footer with its size and a
digest of its bytes. Writing it (one rename, or one upload) is the commit: from then on a
reader skips every file it names whose bytes are still the ones merged, whether or not the
compaction has deleted it yet. A file rewritten after it was merged (a running trial's next
report) is new: it is read, and the compacted rows of its trial are not.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["PART_PREFIX", "REPLACES_KEY", "Listing", "digest", "identity", "list_kind"]

#: The name of every compacted file starts with it.
PART_PREFIX = "compacted-"
#: The footer key of a compacted file: JSON ``{file name: [size, digest]}``.
REPLACES_KEY = b"mtlstudy.replaces"

Identity = tuple[int, str]


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def identity(path: Path) -> Identity:
    """A file's size and the digest of its bytes."""
    data = path.read_bytes()
    return len(data), digest(data)


_REPLACES: OrderedDict[tuple[str, int, int, int], dict[str, Identity] | None] = OrderedDict()


def replaces(path: Path) -> dict[str, Identity] | None:
    """What the compacted file at ``path`` replaces; None if it is not one."""
    if not path.name.startswith(PART_PREFIX):
        return None
    stat = path.stat()
    key = (str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if key not in _REPLACES:
        try:
            metadata = pq.read_schema(path).metadata or {}
        except (OSError, pa.ArrowException):
            metadata = {}
        raw = metadata.get(REPLACES_KEY)
        _REPLACES[key] = (
            None if raw is None else {k: (int(v[0]), str(v[1])) for k, v in json.loads(raw).items()}
        )
        while len(_REPLACES) > 256:
            _REPLACES.popitem(last=False)
    return _REPLACES[key]


@dataclass
class Listing:
    """One kind folder of one study: what to read, and what is already merged."""

    #: Per-trial (or otherwise uncompacted) files to read.
    plain: list[Path] = field(default_factory=list)
    #: Compacted files to read.
    parts: list[Path] = field(default_factory=list)
    #: Files a compacted file already holds (leftovers of a compaction; never read).
    covered: dict[Path, Identity] = field(default_factory=dict)
    #: Compacted files that a later one replaced (likewise never read).
    replaced_parts: list[Path] = field(default_factory=list)

    @property
    def superseded(self) -> set[str]:
        """Trials whose own file is newer than the compacted rows: their file names."""
        return {p.stem for p in self.plain} if self.parts else set()

    @property
    def files(self) -> list[Path]:
        return [*self.plain, *self.parts]


def list_kind(files: list[Path]) -> Listing:
    """Sort the readable Parquet files of one ``trials`` or ``history`` folder."""
    merged: dict[str, Identity] = {}
    parts: list[Path] = []
    for path in files:
        names = replaces(path)
        if names is not None:
            parts.append(path)
            merged.update(names)
    listing = Listing()
    for path in files:
        expected = merged.get(path.name)
        if expected is not None and _same(path, expected):
            if path in parts:
                listing.replaced_parts.append(path)
            else:
                listing.covered[path] = expected
        elif path in parts:
            listing.parts.append(path)
        else:
            listing.plain.append(path)
    return listing


def _same(path: Path, expected: Identity) -> bool:
    try:
        if os.stat(path).st_size != expected[0]:
            return False  # rewritten since it was merged: most differ in size already
        return identity(path) == expected
    except FileNotFoundError:
        return True  # deleted by the compaction meanwhile
