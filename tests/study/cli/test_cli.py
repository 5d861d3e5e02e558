"""The command line as a user meets it: a real subprocess, its output and exit status."""

import subprocess
import sys
from pathlib import Path

import pytest


def _mtlstudy(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "study.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["run", "no-such-spec.yaml"], "spec 'no-such-spec.yaml' not found"),
        (["query", "no-such-results"], "no-such-results"),
        (["frobnicate"], "invalid choice"),
        (["query"], "the following arguments are required"),
        (["bench", "overhead", "--trials", "x"], "invalid int value"),
        (["data", "check", "no-such-root", "--format", "nyud"], "no-such-root not found"),
        (["data", "synth", "out", "--format", "pascal", "--val", "0"], "positive integer"),
        (["data", "check", ".", "--format", "coco"], "unknown dataset format 'coco'"),
        (["demo", "--results", "/etc"], "--results: /etc is a system folder"),
    ],
)
def test_user_errors_are_one_line_with_status_2(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    done = _mtlstudy(*args, cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("mtlstudy: error:") and expected in lines[0]
    assert "Traceback" not in done.stderr


def test_bad_spec_fails_before_ray_starts(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: x\ntasks: [depth]\ntrials: -1\n")
    done = _mtlstudy("run", str(spec), cwd=tmp_path)
    assert done.returncode == 2
    assert "field 'trials'" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "results").exists()


def test_methods_lists_each_method_with_its_defaults() -> None:
    done = _mtlstudy("methods")
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    rows = {line.split()[0]: i for i, line in enumerate(lines) if not line.startswith(" ")}
    dwa = rows["dwa"]
    assert '"temperature": 2.0' in lines[dwa] and "Liu" in lines[dwa + 1]
    assert "Gramian" in lines[rows["mgda"]] and "KPIs" in lines[rows["amtl"]]
    assert "last-layer" in lines[rows["gradnorm"]] and "potentials" not in lines[rows["amtl"]]


@pytest.mark.parametrize(
    "fmt",
    # Each format's reader and writer are tested in-process too; one runs here by default.
    [
        "nyud",
        pytest.param("pascal", marks=pytest.mark.slow),
        pytest.param("voc", marks=pytest.mark.slow),
    ],
)
def test_data_synth_writes_a_dataset_that_data_check_reads(tmp_path: Path, fmt: str) -> None:
    out = tmp_path / fmt
    done = _mtlstudy(
        "data",
        "synth",
        str(out),
        "--format",
        fmt,
        "--train",
        "3",
        "--val",
        "2",
        "--image-size",
        "16",
    )
    assert done.returncode == 0, done.stderr
    done = _mtlstudy("data", "check", str(out), "--format", fmt)
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.strip().splitlines()
    counts = {row.split()[0]: row.split()[1:] for row in rows}
    assert set(counts) == {"train", "val"}
    assert "images" in header.split()
    assert counts["train"][header.split()[1:].index("images")] == "3"
    task = "detection" if fmt == "voc" else "semseg"
    assert counts["val"][header.split()[1:].index(task)] == "2"
    again = _mtlstudy("data", "synth", str(out), "--format", fmt)
    assert again.returncode == 2 and "not empty" in again.stderr
