"""Reading a spec file: its YAML, its folders resolved against the spec, its search space,
and the checks that need the model; any problem is one :class:`SpecError` line."""

from __future__ import annotations

from pathlib import Path

from search_spaces import SearchSpace, SearchSpaceError, load_space, read_model
from study.spec._checks import check_runnable
from study.spec._models import SpecError, StudySpec

__all__ = ["load_spec"]


def _resolved(spec_path: Path, root: str, field: str) -> str:
    folder = spec_path.parent / root
    if not folder.is_dir():
        raise SpecError(f"{spec_path}: field '{field}': folder {folder} not found")
    return str(folder.resolve())


def load_spec(path: str | Path) -> tuple[StudySpec, SearchSpace]:
    """Read and validate a spec and its search space; any problem is one :class:`SpecError`."""
    path = Path(path)
    spec = read_model(path, StudySpec, SpecError, "spec")
    if spec.dataset.root is not None:
        dataset = spec.dataset.model_copy(
            update={"root": _resolved(path, spec.dataset.root, "dataset.root")}
        )
        spec = spec.model_copy(update={"dataset": dataset})
    if spec.dataset.parts is not None:
        parts = tuple(
            p
            if p.root is None
            else p.model_copy(update={"root": _resolved(path, p.root, f"dataset.parts.{i}.root")})
            for i, p in enumerate(spec.dataset.parts)
        )
        dataset = spec.dataset.model_copy(update={"parts": parts})
        spec = spec.model_copy(update={"dataset": dataset})
    space_path = Path(spec.search_space)
    if space_path.suffix and not space_path.is_absolute():
        space_path = path.parent / space_path
    try:
        space = load_space(space_path if space_path.suffix else spec.search_space)
        if spec.methods is not None:
            space = space.restricted_to(spec.methods)
        # A model argument the spec fixes is not searched.
        searched = {k: p for k, p in space.model.items() if k not in spec.model}
        space = space.model_copy(
            update={"model": searched, "architectures": list(spec.architectures or [])}
        )
    except SearchSpaceError as err:
        raise SpecError(f"{path}: field 'search_space': {err}") from None
    check_runnable(path, spec, space)
    return spec, space
