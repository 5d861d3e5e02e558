"""What every command shares: one-line parse errors and argument types."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from typing import NoReturn

from study.errors import UserError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, as for every other user error; `-h` still shows the usage.
        raise UserError(f"{self.prog}: {message} (see '{self.prog} -h')")


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1], got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _method_name(name: str) -> str:
    from models import balancing

    if name not in balancing.list_methods():
        raise argparse.ArgumentTypeError(
            f"unknown method {name!r}; expected one of {balancing.list_methods()}"
        )
    return name


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    # DeepSpeed and Ray print to stdout from loggers bound at import; keep stdout pure JSON.
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
