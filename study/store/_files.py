"""Which Parquet files a query reads: results roots, study folders, never temp files."""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

__all__ = [
    "HISTORY_DIR",
    "KINDS",
    "PARQUET_SUFFIX",
    "TRIALS_DIR",
    "Kind",
    "PathLike",
    "result_files",
]

Kind = Literal["trials", "history"]
PathLike = str | os.PathLike[str]

# The layout of a study folder; writers, readers and the remote mirror share these names.
TRIALS_DIR = "trials"
HISTORY_DIR = "history"
KINDS = (TRIALS_DIR, HISTORY_DIR)
PARQUET_SUFFIX = ".parquet"


# ---------------------------------------------------------------------------- files


def _is_result_file(path: Path) -> bool:
    # Temporary files of interrupted writes are hidden and end in .tmp; never read them.
    return path.is_file() and path.suffix == PARQUET_SUFFIX and not path.name.startswith(".")


def _study_files(study_dir: Path, kind: str) -> list[Path]:
    return sorted(p for p in (study_dir / kind).glob(f"*{PARQUET_SUFFIX}") if _is_result_file(p))


def _files_under(path: Path, kind: str) -> list[Path]:
    """The ``kind`` files of ``path``, a study folder or a root of study folders."""
    if any((path / k).is_dir() for k in KINDS):
        return _study_files(path, kind)
    studies = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    return [f for study in studies for f in _study_files(study, kind)]


def result_files(paths: PathLike | Sequence[PathLike], kind: Kind = "trials") -> list[Path]:
    """The ``kind`` files of one or more results roots or study folders, each once.

    A path that is not a folder, or holds no ``kind`` files, raises ``FileNotFoundError``.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
    items = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    if not items:
        raise ValueError("no results path given")
    found: dict[Path, None] = {}  # ordered set: the same study reached twice is read once
    for item in items:
        path = Path(item)
        expected = (
            f"expected a results folder with <study>/{kind}/*{PARQUET_SUFFIX} "
            f"or a study folder with {kind}/*{PARQUET_SUFFIX}"
        )
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: no such folder; {expected}")
        files = _files_under(path, kind)
        if not files:
            raise FileNotFoundError(f"{path}: no {kind} results; {expected}")
        found.update((f.resolve(), None) for f in files)
    return list(found)


def _unknown(requested: Iterable[str], available: Sequence[str], what: str = "") -> None:
    known = set(available)
    unknown = list(dict.fromkeys(c for c in requested if c not in known))
    if unknown:
        close = [m for u in unknown for m in difflib.get_close_matches(u, available, n=3)]
        hint = f"; did you mean {', '.join(dict.fromkeys(close))}?" if close else ""
        names = sorted(known)
        some = ", ".join(names[:12])
        more = f", … ({len(names)} in all)" if len(names) > 12 else ""
        raise ValueError(f"{what}unknown column(s) {unknown}{hint}; available include {some}{more}")
