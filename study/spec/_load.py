"""Reading a spec file: its YAML, its folders resolved against the spec, its search space,
and the checks that need the model; any problem is one :class:`SpecError` line."""

from __future__ import annotations

import os
import re
from pathlib import Path

from search_spaces import SearchSpace, SearchSpaceError, load_space, read_model
from study.spec._base import SpecError
from study.spec._checks import check_runnable
from study.spec._models import StudySpec

# As study.store reads a URI; not imported from there, which would load pandas.
_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
__all__ = ["check_results", "load_spec"]

#: Folders of the system, never a results root (nor anything directly in them is meant).
_SYSTEM = frozenset(
    Path(p)
    for p in (
        "/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/proc", "/root", "/run",
        "/sbin", "/sys", "/usr", "/usr/bin", "/usr/lib", "/usr/local", "/usr/sbin", "/var",
        "/opt", "/srv", "/mnt", "/media",
    )
)  # fmt: skip


def _resolved(spec_path: Path, root: str, field: str, format_name: str) -> str:
    folder = (spec_path.parent / root).absolute()
    try:
        found = folder.is_dir()
    except OSError:
        found = False
    if not found:
        raise SpecError(
            f"{spec_path}: field '{field}': dataset folder {os.path.normpath(folder)} not found "
            f"(relative roots are read from the spec's folder); write one with "
            f"'mtlstudy data synth OUT --format {format_name}' or check one with "
            f"'mtlstudy data check ROOT --format {format_name}'"
        )
    return str(folder.resolve())


def check_results(results: str, where: str = "field 'results'") -> None:
    """Refuse a results root a study could not write: an existing file, a system folder,
    or a folder the user cannot create. A URI is the store's to check."""
    if not results.strip() or any(ord(c) < 32 or ord(c) == 127 for c in results):
        raise SpecError(f"{where}: expected a folder name without control characters")
    if _URI.match(results):
        return
    folder = Path(results).expanduser().absolute()
    resolved = Path(os.path.realpath(folder))
    if resolved in _SYSTEM or folder in _SYSTEM:
        raise SpecError(f"{where}: {folder} is a system folder; expected a folder of your own")
    try:
        if folder.exists() and not folder.is_dir():
            raise SpecError(f"{where}: {folder} is a file; expected a folder")
        existing = folder
        while not existing.exists():
            existing = existing.parent
    except OSError as err:
        raise SpecError(f"{where}: {folder} cannot be used ({err.strerror})") from None
    if not existing.is_dir():
        raise SpecError(f"{where}: {existing} is a file; expected {folder} to be a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "write to" if existing == folder else f"create {folder} in"
        raise SpecError(f"{where}: you may not {what} {existing}; expected a writable folder")


def load_spec(path: str | Path) -> tuple[StudySpec, SearchSpace]:
    """Read and validate a spec and its search space; any problem is one :class:`SpecError`."""
    path = Path(path)
    spec = read_model(path, StudySpec, SpecError, "spec")
    if spec.dataset.root is not None:
        dataset = spec.dataset.model_copy(
            update={"root": _resolved(path, spec.dataset.root, "dataset.root", spec.dataset.name)}
        )
        spec = spec.model_copy(update={"dataset": dataset})
    if spec.dataset.parts is not None:
        parts = tuple(
            p
            if p.root is None
            else p.model_copy(
                update={"root": _resolved(path, p.root, f"dataset.parts.{i}.root", p.name)}
            )
            for i, p in enumerate(spec.dataset.parts)
        )
        dataset = spec.dataset.model_copy(update={"parts": parts})
        spec = spec.model_copy(update={"dataset": dataset})
    check_results(spec.results, f"{path}: field 'results'")
    space_path = Path(spec.search_space)
    if space_path.suffix and not space_path.is_absolute():
        space_path = path.parent / space_path
    try:
        space = load_space(space_path if space_path.suffix else spec.search_space)
    except SearchSpaceError as err:
        raise SpecError(f"{path}: field 'search_space': {err}") from None
    try:
        if spec.methods is not None:
            space = space.restricted_to(spec.methods)
    except SearchSpaceError as err:
        raise SpecError(f"{path}: field 'methods': {err}") from None
    try:
        # A model argument the spec fixes is not searched.
        searched = {k: p for k, p in space.model.items() if k not in spec.model}
        space = space.model_copy(
            update={"model": searched, "architectures": list(spec.architectures or [])}
        )
    except SearchSpaceError as err:
        raise SpecError(f"{path}: field 'search_space': {err}") from None
    check_runnable(path, spec, space)
    return spec, space
