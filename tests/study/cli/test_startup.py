"""The command line starts without the training stack: ``--help`` and the subcommands'
help import no heavy library (what each import costs is ``mtlstudy bench startup``'s)."""

from __future__ import annotations

import subprocess
import sys

import pytest

#: Libraries that each take from a tenth of a second to seconds to import.
HEAVY = {"torch", "numpy", "pandas", "pyarrow", "ray", "optuna", "timm", "pydantic", "seaborn"}


def imported(*argv: str) -> set[str]:
    """The top-level modules ``mtlstudy ARGV`` imports, read from ``-X importtime``."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "study.cli", *argv],
        capture_output=True,
        text=True,
        check=False,
    )
    names = set()
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


@pytest.mark.parametrize(
    "argv",
    [
        ("--help",),
        ("query", "--help"),
        ("plot", "--help"),
        ("report", "--help"),
        ("data", "synth", "--help"),
        ("bench", "step", "--help"),
        ("jobs", "list", "--help"),
    ],
)
def test_help_imports_no_heavy_library(argv: tuple[str, ...]) -> None:
    assert imported(*argv) & HEAVY == set()


def test_the_reading_is_real() -> None:
    # A verb that reads a dataset does import torch: the parse above would see it.
    assert "torch" in imported("data", "check", "/nonexistent", "--format", "nyud")
