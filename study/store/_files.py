"""Which Parquet files a query reads: results roots, study folders, per-trial and compacted
files, never temp files nor a file that a compacted one already holds."""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

from study.store._parts import Listing, list_kind

__all__ = [
    "HISTORY_DIR",
    "KINDS",
    "PARQUET_SUFFIX",
    "TRIALS_DIR",
    "Kind",
    "PathLike",
    "result_files",
    "study_listings",
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
    files = (study_dir / kind).glob(f"*{PARQUET_SUFFIX}")
    return sorted(p for p in files if _is_result_file(p))


def _studies_under(path: Path, kind: str) -> list[Path]:
    """The study folders of ``path``, a study folder or a root of study folders."""
    if any((path / k).is_dir() for k in KINDS):
        return [path]
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def study_listings(
    paths: PathLike | Sequence[PathLike], kind: Kind = "trials"
) -> dict[Path, Listing]:
    """Per study folder of one or more results roots or study folders (each once): its
    ``kind`` files to read, per-trial and compacted, and those a compacted file holds.

    A path that is not a folder, or holds no ``kind`` files, raises ``FileNotFoundError``.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
    items = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    if not items:
        raise ValueError("no results path given")
    found: dict[Path, Listing] = {}  # ordered: the same study reached twice is read once
    for item in items:
        path = Path(item)
        expected = (
            f"expected a results folder with <study>/{kind}/*{PARQUET_SUFFIX} "
            f"or a study folder with {kind}/*{PARQUET_SUFFIX}"
        )
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: no such folder; {expected}")
        studies = [s.resolve() for s in _studies_under(path, kind)]
        listed = {s: found.get(s) or list_kind(_study_files(s, kind)) for s in studies}
        if not any(v.files for v in listed.values()):
            raise FileNotFoundError(f"{path}: no {kind} results; {expected}")
        found.update((s, v) for s, v in listed.items() if v.files)
    return found


def result_files(paths: PathLike | Sequence[PathLike], kind: Kind = "trials") -> list[Path]:
    """The ``kind`` files to read of one or more results roots or study folders, each
    once: per-trial files and compacted files, never a file a compacted one holds.

    A path that is not a folder, or holds no ``kind`` files, raises ``FileNotFoundError``.
    """
    return [f for listing in study_listings(paths, kind).values() for f in listing.files]


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
