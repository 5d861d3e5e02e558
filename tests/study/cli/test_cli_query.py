"""`mtlstudy query` and `mtlstudy bench query` as a user meets them: a real subprocess for
the formats, in-process (``main(argv)``, the same code without a fresh interpreter's
start-up) for the error lines and the bench."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from study.cli import main
from study.store import SCHEMA_VERSION, write_history, write_trial


def _mtlstudy(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "study.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        check=False,
    )


def _main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def results(tmp_path: Path) -> Path:
    root = tmp_path / "results"
    for study, trial_id, arch, method, delta in [
        ("s1", "t1", "rcm_resnet", "amtl", 0.02),
        ("s1", "t2", "rcm_resnet", "dwa", -0.01),
        ("s1", "t3", "hard_sharing", "amtl", 0.05),
        ("s2", "t4", "rcm_resnet", "amtl", 0.04),
    ]:
        write_trial(
            root,
            study,
            {
                "trial_id": trial_id,
                "status": "completed",
                "architecture": arch,
                "method": method,
                "tasks": ["semseg", "depth"],
                "delta_m": delta,
                "final": {"semseg": {"miou": 0.5 + delta}},
            },
        )
        write_history(
            root,
            study,
            trial_id,
            [{"epoch": 1, "split": "val", "task": "semseg", "metric": "miou", "value": 0.5}],
        )
    return root


_WHERE = "architecture == 'rcm_resnet' and method == 'amtl'"


def test_query_csv_filters_sorts_and_projects(results: Path) -> None:
    done = _mtlstudy(
        "query",
        str(results / "s1"),
        str(results / "s2"),
        "--where",
        _WHERE,
        "--columns",
        "study",
        "trial_id",
        "delta_m",
        "--sort",
        "delta_m",
        "--descending",
        "--format",
        "csv",
    )
    assert done.returncode == 0, done.stderr
    frame = pd.read_csv(io.StringIO(done.stdout))
    assert list(frame.columns) == ["study", "trial_id", "delta_m"]
    assert list(frame["trial_id"]) == ["t4", "t1"] and list(frame["study"]) == ["s2", "s1"]


def test_query_csv_writes_list_cells_as_json(results: Path) -> None:
    done = _mtlstudy(
        "query", str(results / "s1"), "--columns", "trial_id", "tasks", "--format", "csv"
    )
    assert done.returncode == 0, done.stderr
    frame = pd.read_csv(io.StringIO(done.stdout))
    assert [json.loads(cell) for cell in frame["tasks"]] == [["semseg", "depth"]] * len(frame)


def test_query_parquet_writes_a_file_atomically(results: Path, tmp_path: Path) -> None:
    out = tmp_path / "best.parquet"
    done = _mtlstudy(
        "query",
        str(results),
        "--where",
        "`final.semseg.miou` > 0.51",
        "--format",
        "parquet",
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and "wrote 3 rows" in done.stderr
    table = pq.read_table(out)
    assert sorted(table["trial_id"].to_pylist()) == ["t1", "t3", "t4"]
    assert table["tasks"].to_pylist()[0] == ["semseg", "depth"]  # a list column stays a list
    assert set(table["schema_version"].to_pylist()) == {SCHEMA_VERSION}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

    history = tmp_path / "history.json"
    done = _mtlstudy("query", str(results), "--history", "--format", "json", "--out", str(history))
    assert done.returncode == 0, done.stderr
    assert len(json.loads(history.read_text())) == 4


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--format", "parquet"], "--format parquet writes a file; give it with --out FILE"),
        (["--out", "no/such/folder/x.csv"], "--out: folder no/such/folder does not exist"),
        (["--where", "methd == 'dwa'"], "did you mean method"),
        (["--where", "method =="], "invalid syntax"),
        (["--where", "__import__('os')"], "is not allowed"),
        (["--columns", "nope"], "unknown column(s) ['nope']"),
        (["--format", "xml"], "invalid choice"),
    ],
)
def test_query_errors_are_one_line(
    results: Path, args: list[str], expected: str, capsys, monkeypatch
) -> None:
    monkeypatch.chdir(results.parent)
    code, out, err = _main(capsys, "query", str(results), *args)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("mtlstudy: error:") and expected in lines[0]


def test_bench_query_prints_figures(capsys) -> None:
    args = ["--trials", "120", "--history", "1200", "--files", "6", "--rounds", "1"]
    code, out, err = _main(capsys, "bench", "query", *args, "--json")
    assert code == 0, err
    figures = json.loads(out)
    assert figures["store"]["trial_rows"] == 120 and len(figures["queries"]) == 3
    code, out, err = _main(capsys, "bench", "query", *args)
    assert code == 0 and "best Δm per method × architecture" in out
