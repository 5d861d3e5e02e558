"""The spec reference in Markdown, rendered from the pydantic models themselves so it
cannot drift from what :func:`load_spec` accepts."""

from __future__ import annotations

import inspect
import json
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from study.spec._models import StudySpec

__all__ = ["spec_markdown"]

COMMAND = "mtlstudy spec --markdown > docs/SPEC.md"

_HEADER = f"""\
<!-- Generated from study/spec by `{COMMAND}`; do not edit. -->

# Spec reference

A study spec is YAML; its top level is a [StudySpec](#studyspec). Every field, its type,
its default and what it does. A field without a default is required; `null` is YAML's
none.
"""

#: Field constraints pydantic keeps in ``FieldInfo.metadata``, as they read in a type.
_BOUNDS = (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"))


def spec_markdown() -> str:
    """The reference of every spec field: one section and table per model."""
    return _HEADER + "\n" + _render(StudySpec, home="study.spec")


def _render(root: type[BaseModel], *, home: str) -> str:
    """Sections for ``root`` and each model nested in it that is defined under the module
    prefix ``home``; models from elsewhere are named, not expanded."""
    sections = []
    for model, used_in in _walk(root, home).items():
        sections.append(_section(model, used_in, home))
    return "\n".join(sections)


def _walk(root: type[BaseModel], home: str) -> dict[type[BaseModel], list[str]]:
    """Each model once, depth first in field order, with the fields that hold it."""
    found: dict[type[BaseModel], list[str]] = {root: []}

    def visit(model: type[BaseModel]) -> None:
        for name, field in model.model_fields.items():
            for nested in _models_in(field.annotation):
                if not nested.__module__.startswith(home):
                    continue
                first = nested not in found
                found.setdefault(nested, []).append(f"`{name}` of {_link(model)}")
                if first:
                    visit(nested)

    visit(root)
    return found


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def _section(model: type[BaseModel], used_in: list[str], home: str) -> str:
    lines = [f"## {model.__name__}", ""]
    if used_in:
        lines += [f"In {', '.join(used_in)}.", ""]
    if model.__doc__:
        lines += [_prose(model.__doc__), ""]
    lines += ["| field | type | default | meaning |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        if not field.description:
            raise ValueError(f"{model.__name__}.{name} has no description")
        cells = (f"`{name}`", _field_type(field, home), _default(field), field.description)
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _prose(doc: str) -> str:
    # Docstrings are reStructuredText; one paragraph per line in Markdown.
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in paragraphs).replace("``", "`")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _field_type(field: FieldInfo, home: str) -> str:
    """The annotation with the field's constraints; ``or null`` last when optional."""
    members = _union_members(field.annotation)
    optional = type(None) in members
    shown = [m for m in members if m is not type(None)]
    text = " or ".join(_type(m, home, nested=False) for m in shown)
    text += _constraints(field)
    return f"{text} or null" if optional else text


def _union_members(annotation: Any) -> tuple[Any, ...]:
    if get_origin(annotation) in (Union, types.UnionType):
        return get_args(annotation)
    return (annotation,)


def _type(annotation: Any, home: str, *, nested: bool) -> str:
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is type(None):
        return "null"
    if origin is Annotated:
        return _type(args[0], home, nested=nested)
    if origin is Literal:
        return " / ".join(f"`{_yaml(a)}`" for a in args)
    if origin in (Union, types.UnionType):
        text = " or ".join(_type(a, home, nested=True) for a in args)
        return f"({text})" if nested else text
    if origin in (list, tuple):
        # A tuple field reads as a YAML list; fixed-length tuples are not spec types.
        return f"list of {_type(args[0], home, nested=True)}"
    if origin is dict:
        key, value = (_type(a, home, nested=True) for a in args)
        return f"map of {key} to {value}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation.__module__.startswith(home):
            return _link(annotation)
        return f"`{annotation.__name__}`"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation)


def _link(model: type[BaseModel]) -> str:
    # GitHub's heading anchors: the class name in lower case.
    return f"[{model.__name__}](#{model.__name__.lower()})"


def _constraints(field: FieldInfo) -> str:
    """Bounds, lengths and patterns from ``FieldInfo.metadata``, e.g. `` ≥ 1, ≤ 100``."""
    bounds, extra = [], []
    for item in field.metadata:
        for attr, sign in _BOUNDS:
            value = getattr(item, attr, None)
            if value is not None:
                bounds.append(f"{sign} {_yaml(value)}")
        for attr, words in (("min_length", "at least"), ("max_length", "at most")):
            value = getattr(item, attr, None)
            if value is not None:
                extra.append(f"{words} {value}")
        pattern = getattr(item, "pattern", None)
        if pattern is not None:
            extra.append(f"matching `{pattern}`")
    text = f" {', '.join(bounds)}" if bounds else ""
    return text + (f" ({', '.join(extra)})" if extra else "")


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return "computed"
    if field.default is PydanticUndefined:
        return "required"
    if isinstance(field.default, BaseModel):
        return "its defaults"
    return f"`{_yaml(field.default)}`"


def _yaml(value: Any) -> str:
    """A value as one would write it in the spec."""
    if isinstance(value, str):
        return value
    if isinstance(value, tuple):
        value = list(value)
    return json.dumps(value, ensure_ascii=False)
