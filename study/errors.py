"""User errors: one line naming what is wrong and what was expected, exit status 2."""

from __future__ import annotations

__all__ = ["UserError", "first_line"]


class UserError(Exception):
    """An error in what the user gave (a spec, a path, an argument), not in the platform."""


def first_line(err: BaseException) -> str:
    """An error's message reduced to its first line (its type's name when it has none)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
