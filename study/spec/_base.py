"""What every part of the spec shares: its error, the bounds of its numbers, and the
strict base model that refuses unknown fields and non-finite numbers."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    StringConstraints,
)

from search_spaces import one_line
from study.data import dataset_names
from study.errors import UserError


class SpecError(UserError):
    """A spec that cannot be run; its message is one line of at most ``MAX_MESSAGE``
    characters."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


#: Seeds are 32-bit: numpy's generators take no larger one.
MAX_SEED = 2**32 - 1
#: Upper bounds of the counts, far above any study yet small enough to refuse a typo
#: (``train_samples: 1.0e29``) before Ray starts rather than hang or exhaust memory.
MAX_SAMPLES = 10_000_000
MAX_TRIALS = 100_000
MAX_EPOCHS = 100_000
MAX_WORKERS = 4096
#: Loader processes a trial takes by default: more rarely decode faster than a GPU trains.
MAX_LOADER_WORKERS = 8
#: Architectures whose shared trunk is a transformer on tokens: channels-last memory, which
#: speeds up convolutions, does nothing for them.
TOKEN_ARCHITECTURES = frozenset({"vit_sharing"})


def unknown_names(kind: str, names: Sequence[str], known: Sequence[str]) -> str | None:
    """``unknown <kind> 'x'; did you mean 'y'?`` for the first of ``names`` not in
    ``known`` (None: all are known), listing the choices when none is close."""
    for name in names:
        if name in known:
            continue
        close = difflib.get_close_matches(name, list(known), n=1)
        got = name if len(name) <= 60 else name[:59] + "…"
        if close:
            return f"unknown {kind} {got!r}; did you mean {close[0]!r}?"
        return f"unknown {kind} {got!r}; expected one of {', '.join(known)}"
    return None


def _known_dataset(name: str) -> str:
    problem = unknown_names("dataset", [name], dataset_names())
    if problem is not None:
        raise ValueError(problem)
    return name


def _plain_path(text: str) -> str:
    """A path or URI as typed in a spec: one line, no control characters, each part
    short enough for a filesystem (255 bytes)."""
    if not text.strip():
        raise ValueError("expected a path, got an empty string")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise ValueError("expected a path without newlines or control characters")
    longest = max(len(part.encode()) for part in text.split("/"))
    if longest > 255:
        raise ValueError(f"a path component of {longest} bytes; expected at most 255")
    return text


#: A folder or file named by a spec.
PathText = Annotated[str, StringConstraints(max_length=4096), AfterValidator(_plain_path)]
#: A model argument; a string is a name or a path, never a document.
ModelArg = Annotated[str, StringConstraints(max_length=4096)] | int | float | bool


#: ``synthetic`` or a registered on-disk format (:func:`study.data.dataset_names`).
DatasetName = Annotated[str, AfterValidator(_known_dataset)]


class _Strict(BaseModel):
    # A string "inf" or "nan" would otherwise parse as a float.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
