"""What a submitted study uploads: a filtered copy of the project, with the spec in it."""

from __future__ import annotations

import fnmatch
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from cluster._session import ClusterError

if TYPE_CHECKING:
    pass


#: Where a spec from outside the project goes in the uploaded copy.
_SUBMITTED = "_submitted"
#: Left out of the upload: at the top of the project, and anywhere in it.
_TOP_EXCLUDES = (".venv", ".git", "results", "build", ".torch_extensions")
_ANY_EXCLUDES = ("__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache", "*.parquet")
#: Not copied, so that Ray's upload does not apply them on top of the filter above: an
#: unanchored ``results/`` in ``.gitignore`` would drop ``study/results/`` (tracked code).
_IGNORE_FILES = (".gitignore", ".rayignore")
#: Files larger than this stay behind (data, checkpoints): the code is small.
_MAX_FILE_BYTES = 8 * 2**20

# --- the upload ------------------------------------------------------------------------


def _project_root() -> Path:
    """The source tree holding ``pyproject.toml`` that this package was imported from."""
    root = Path(__file__).resolve().parent.parent
    if not (root / "pyproject.toml").is_file():
        raise ClusterError(
            f"cannot find the project's source tree (pyproject.toml) at {root}; "
            "submit from a clone installed with 'pip install -e .'"
        )
    return root


def _runtime_excludes() -> list[str]:
    """What the upload leaves out, as Ray's ``excludes`` (gitignore patterns)."""
    return [f"/{name}" for name in _TOP_EXCLUDES] + list(_ANY_EXCLUDES)


def _copy_project(root: Path, into: Path, keep_out: Sequence[Path]) -> None:
    skip = {p.resolve() for p in keep_out}

    def ignore(folder: str, names: list[str]) -> set[str]:
        here = Path(folder)
        out = set()
        for name in names:
            path = here / name
            if here == root and name in _TOP_EXCLUDES:
                out.add(name)
            elif name in _IGNORE_FILES or any(fnmatch.fnmatch(name, p) for p in _ANY_EXCLUDES):
                out.add(name)
            elif path.resolve() in skip or path.is_symlink():
                out.add(name)
            elif path.is_file() and path.stat().st_size > _MAX_FILE_BYTES:
                out.add(name)
        return out

    shutil.copytree(root, into, ignore=ignore)


def _read_spec(spec_path: Path) -> dict[str, Any]:
    if not spec_path.is_file():
        raise ClusterError(f"spec {spec_path} not found; expected a YAML file")
    try:
        data = yaml.safe_load(spec_path.read_text())
    except yaml.YAMLError:
        raise ClusterError(f"{spec_path}: not valid YAML") from None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise ClusterError(f"{spec_path}: expected a mapping with a 'name'")
    return data


def is_uri(location: str) -> bool:
    """An object-store results root (``s3://…``): the same place from every node."""
    return "://" in location


def _check_paths(spec_path: Path, data: dict[str, Any], results: str | None) -> str:
    """The absolute results root; a relative data or results path is refused."""
    chosen = results if results is not None else str(data.get("results", "results"))
    if not Path(chosen).is_absolute() and not is_uri(chosen):
        field = "--results" if results is not None else f"{spec_path}: field 'results'"
        raise ClusterError(
            f"{field}: {chosen!r} is relative, and a submitted study runs in a temporary "
            "folder on the cluster; expected an absolute path on storage every node shares, "
            "or an object-store URI"
        )
    dataset = data.get("dataset") if isinstance(data.get("dataset"), dict) else {}
    roots = [("dataset.root", dataset.get("root"))] + [
        (f"dataset.parts.{i}.root", part.get("root"))
        for i, part in enumerate(dataset.get("parts") or [])
        if isinstance(part, dict)
    ]
    for field, root in roots:
        if isinstance(root, str) and not Path(root).is_absolute():
            raise ClusterError(
                f"{spec_path}: field '{field}': {root!r} is relative, and data is read on "
                "the cluster's nodes; expected an absolute path there"
            )
    return chosen


def _place_spec(spec_path: Path, data: dict[str, Any], root: Path, stage: Path) -> Path:
    """Put the spec (and a search-space file it names) in the staged copy; its path there."""
    spec_path = spec_path.resolve()
    if spec_path.is_relative_to(root) and (stage / spec_path.relative_to(root)).is_file():
        return spec_path.relative_to(root)  # copied with the project, next to its files
    placed = Path(_SUBMITTED) / spec_path.name
    (stage / _SUBMITTED).mkdir(exist_ok=True)
    shutil.copy2(spec_path, stage / placed)
    space = data.get("search_space")
    if isinstance(space, str) and Path(space).suffix and not Path(space).is_absolute():
        source = (spec_path.parent / space).resolve()
        if not source.is_relative_to(spec_path.parent) or not source.is_file():
            raise ClusterError(
                f"{spec_path}: field 'search_space': {space!r} is not a file beside the spec; "
                "expected a path under the spec's folder, a built-in space, or an absolute path"
            )
        target = stage / _SUBMITTED / source.relative_to(spec_path.parent)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    return placed
