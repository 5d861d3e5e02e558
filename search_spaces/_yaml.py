"""Validated YAML files: one reader and one error wording for specs and search spaces."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

__all__ = ["describe_validation_error", "read_model"]

M = TypeVar("M", bound=BaseModel)


def describe_validation_error(err: ValidationError) -> str:
    """The first problem as ``field 'a.b': what was expected, got X`` on one line."""
    first = err.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "(top level)"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown field"
    elif first["type"] == "missing":
        message = "required field is missing"
    got = first.get("input")
    quiet = first["type"] in ("missing", "extra_forbidden") or isinstance(got, dict)
    return f"field '{field}': {message}" + ("" if quiet else f", got {got!r}")


def read_model(path: Path, model: type[M], error: type[Exception], what: str) -> M:
    """Parse ``path`` as YAML into ``model``; every problem is one ``error`` naming the file."""
    if not path.is_file():
        raise error(f"{what} {path} not found; expected a YAML file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise error(f"{path}: not valid YAML ({str(err).strip().splitlines()[0]})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise error(f"{path}: expected a mapping of fields, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise error(f"{path}: {describe_validation_error(err)}") from None
