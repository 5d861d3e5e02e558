"""Validated YAML files: one reader and one error wording for specs and search spaces.

A spec is user input, so the reader bounds what YAML alone could make expensive: the
file's size, its nesting, its aliases (a billion-laughs document expands exponentially
while staying small), the digits of an integer; and it refuses NaN and infinity anywhere.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

__all__ = [
    "MAX_BYTES",
    "MAX_MESSAGE",
    "describe_validation_error",
    "one_line",
    "read_model",
    "short_repr",
]

M = TypeVar("M", bound=BaseModel)

#: The largest file read; a spec or search space is a few hundred bytes.
MAX_BYTES = 1_000_000
_MAX_DEPTH = 32
_MAX_ALIASES = 100
#: Values (scalars, lists, mappings) of the document with every alias expanded.
_MAX_EXPANDED = 100_000
_MAX_INT_DIGITS = 30
#: The longest error message: one terminal line or two, whatever paths it names.
MAX_MESSAGE = 400
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_TYPE_TAG = re.compile(r"^(str|int|float|bool|none|constrained-str|.*\[.*\])$")


def one_line(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` on one line (control characters become spaces) of at most ``limit`` chars;
    a longer one loses its middle, so that what it is about and the advice that ends it
    both remain."""
    text = _CONTROL.sub(" ", text).strip()
    if len(text) <= limit:
        return text
    head = (limit - 1) * 2 // 5
    return text[:head] + "…" + text[len(text) - (limit - 1 - head) :]


def short_repr(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters: a message never echoes a huge input."""
    if isinstance(value, (list, tuple, dict, set)) and len(value) > 20:
        return f"a {type(value).__name__} of {len(value)} items"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**40:
        return f"an integer of {len(str(abs(value)))} digits"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _LimitError(yaml.YAMLError):
    """A document beyond the reader's bounds."""


# libyaml's parser where PyYAML has it: ten times faster than the pure-Python one.
_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _BoundedLoader(_SafeLoader):  # type: ignore[misc, valid-type]
    """The safe loader, refusing an integer too long to be a setting (Python would
    otherwise spend quadratic time converting it, or refuse past 4300 digits)."""

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        digits = sum(c.isdigit() for c in str(node.value))
        if digits > _MAX_INT_DIGITS:
            raise _LimitError(f"has an integer of {digits} digits (at most {_MAX_INT_DIGITS})")
        return int(super().construct_yaml_int(node))


_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _BoundedLoader.construct_yaml_int)


def _check_events(text: str) -> None:
    """Refuse deep nesting and many aliases from the event stream, before a node is
    composed: composing recurses once per level and an alias may stand for a subtree."""
    depth = aliases = 0
    for event in yaml.parse(text, Loader=_SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > _MAX_DEPTH:
                raise _LimitError(f"is nested more than {_MAX_DEPTH} levels deep")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
        elif isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > _MAX_ALIASES:
                raise _LimitError(f"has more than {_MAX_ALIASES} aliases (*name)")


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """How many values ``node`` becomes with its aliases expanded; memoised per node, so
    counting takes time linear in the composed graph, not in its expansion."""
    key = id(node)
    if sizes.get(key) == 0:
        raise _LimitError("has a recursive alias (an anchor used inside itself)")
    if key not in sizes:
        sizes[key] = 0  # counting: meeting it again is recursion
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        sizes[key] = 1 + sum(_expanded_size(child, sizes) for child in children)
    return sizes[key]


def _parse(text: str) -> Any:
    _check_events(text)
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node, {})
        if size > _MAX_EXPANDED:
            raise _LimitError(f"expands to more than {_MAX_EXPANDED} values through its aliases")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _non_finite(data: Any, at: str = "") -> str | None:
    """The dotted path of the first NaN or infinity in ``data`` (None: there is none)."""
    if isinstance(data, float) and not math.isfinite(data):
        return at or "(top level)"
    if isinstance(data, dict):
        items: Any = data.items()
    elif isinstance(data, list):
        items = enumerate(data)
    else:
        return None
    for key, value in items:
        found = _non_finite(value, f"{at}.{key}" if at else str(key))
        if found is not None:
            return found
    return None


def describe_validation_error(err: ValidationError) -> str:
    """The first problem as ``field 'a.b': what was expected, got X`` on one line."""
    first = err.errors()[0]
    # A union adds its member's type to the location (model.backbone.constrained-str).
    parts = [str(p) for p in first["loc"] if not (isinstance(p, str) and _TYPE_TAG.match(p))]
    field = ".".join(parts) or "(top level)"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown field"
    elif first["type"] == "missing":
        message = "required field is missing"
    got = first.get("input")
    quiet = first["type"] in ("missing", "extra_forbidden") or isinstance(got, dict)
    # A message that names the value itself, or asks a question, needs no echo.
    quiet = quiet or " got " in message or message.endswith("?")
    return one_line(
        f"field '{one_line(field, 80)}': {message}" + ("" if quiet else f", got {short_repr(got)}")
    )


def read_model(path: Path, model: type[M], error: type[Exception], what: str) -> M:
    """Parse ``path`` as YAML into ``model``; every problem is one ``error`` naming the file."""
    path = Path(path)
    try:
        if not path.is_file():
            raise error(f"{what} {short_repr(str(path), 200)} not found; expected a YAML file")
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise error(f"{path}: {size} bytes; expected a {what} file of at most {MAX_BYTES}")
        raw = path.read_bytes()
    except OSError as err:
        raise error(
            f"{what} {short_repr(str(path), 200)} cannot be read "
            f"({err.strerror or type(err).__name__}); expected a YAML file"
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise error(
            f"{path}: not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start}); "
            "expected a UTF-8 YAML file"
        ) from None
    try:
        data = _parse(text)
    except _LimitError as err:
        raise error(f"{path}: the YAML document {err}; refused") from None
    except (yaml.YAMLError, ValueError, RecursionError) as err:
        problem = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise error(one_line(f"{path}: not valid YAML ({one_line(problem, 160)})")) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise error(f"{path}: expected a mapping of fields, got {type(data).__name__}")
    where = _non_finite(data)
    if where is not None:
        raise error(
            f"{path}: field '{one_line(where, 80)}': expected a finite number, got NaN or infinity"
        )
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise error(f"{path}: {describe_validation_error(err)}") from None
