"""User errors: one line naming what is wrong and what was expected, exit status 2."""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(Exception):
    """An error in what the user gave (a spec, a path, an argument), not in the platform."""
