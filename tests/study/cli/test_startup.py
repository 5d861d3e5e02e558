"""The command line starts without the training stack: ``--help`` and the subcommands'
help import no heavy library, and listing the balancing methods or reading a results
store imports no torch (what each import costs is ``mtlstudy bench startup``'s)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

#: Libraries that each take from a tenth of a second to seconds to import.
HEAVY = {"torch", "numpy", "pandas", "pyarrow", "ray", "optuna", "timm", "pydantic", "seaborn"}
#: The training stack, which the verbs that only read (methods, results) never need.
TRAINING = {"torch", "torchvision", "timm", "ray", "deepspeed"}


def imported(*argv: str, succeeds: bool = False) -> set[str]:
    """The top-level modules ``mtlstudy ARGV`` imports, read from ``-X importtime``;
    with ``succeeds``, the command must also exit 0."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "study.cli", *argv],
        capture_output=True,
        text=True,
        check=False,
    )
    if succeeds and done.returncode != 0:
        pytest.fail(f"mtlstudy {' '.join(argv)} failed: {done.stderr[-2000:]}")
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


def test_listing_the_methods_imports_no_training_stack() -> None:
    assert imported("methods", succeeds=True) & TRAINING == set()
    assert imported("methods", "--markdown", succeeds=True) & TRAINING == set()


@pytest.mark.parametrize(
    "verb",
    [
        ("table", "{store}"),
        ("query", "{store}", "--format", "csv"),
        # Drawing takes seconds of seaborn; the table reads the same task metrics.
        pytest.param(("report", "{store}", "--out", "{out}/report.html"), marks=pytest.mark.slow),
        pytest.param(
            ("plot", "{store}", "--kind", "all", "--out", "{out}"), marks=pytest.mark.slow
        ),
    ],
)
def test_reading_results_imports_no_training_stack(
    verb: tuple[str, ...], store: Path, tmp_path: Path
) -> None:
    argv = [arg.format(store=store, out=tmp_path) for arg in verb]
    names = imported(*argv, succeeds=True)
    assert "pandas" in names  # it did read the store
    assert names & TRAINING == set()
