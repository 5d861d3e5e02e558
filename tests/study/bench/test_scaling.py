"""`mtlstudy bench scaling` as a user meets it: one real run at the smallest settings,
in-process (``main(argv)``, the same code without a fresh interpreter's start-up), and a
bad argument in a real subprocess, where a traceback would show."""

from __future__ import annotations

import contextlib
import io
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from study.bench.scaling import format_table, study_name
from study.cli import main
from study.store import load_trials

_TRIALS = 2
_LEVELS = (1, 2)


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    results = tmp_path_factory.mktemp("scaling") / "results"
    argv = ["bench", "scaling", "--trials", str(_TRIALS), "--epochs", "1", "--json"]
    argv += ["--concurrency", *map(str, _LEVELS), "--results", str(results)]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0
    return json.loads(out.getvalue()), results


@pytest.mark.slow  # one study per concurrency level
def test_every_level_lands_its_trials_completed(bench: tuple[dict[str, Any], Path]) -> None:
    figures, results = bench
    assert [level["concurrency"] for level in figures["levels"]] == list(_LEVELS)
    for level in figures["levels"]:
        rows = load_trials(results / study_name(level["concurrency"]))
        assert len(rows) == _TRIALS and (rows["status"] == "completed").all()
        assert (rows["epochs"] == 1).all() and set(rows["method"]) == {"ew"}
        assert level["trials"] == level["completed"] == _TRIALS and level["errors"] == 0
        # The in-trial time is the rows' own, not something the bench made up.
        assert level["in_trial_s"] == pytest.approx(statistics.fmean(rows["wall_time_s"]))


@pytest.mark.slow  # one study per concurrency level
def test_figures_are_finite_positive_and_consistent(bench: tuple[dict[str, Any], Path]) -> None:
    figures, _ = bench
    timed = (
        "startup_s",
        "search_wall_s",
        "first_trial_s",
        "running_s",
        "in_trial_s",
        "trials_per_min",
        "overhead_s_per_trial",
        "running_trials_per_min",
    )
    cpus = figures["machine"]["ray_cpus"]
    for level in figures["levels"]:
        assert all(math.isfinite(level[k]) and level[k] > 0 for k in timed), level
        # The running window starts at an estimate of the first trial's start (its row
        # written − wall_time_s), which can be late by the trial's set-up, so its overhead
        # may dip below 0 on tiny runs; the last trial's span still lies in the window.
        assert level["running_overhead_s_per_trial"] > -level["in_trial_s"], level
        wall, done, c = level["search_wall_s"], level["completed"], level["concurrency"]
        assert level["trials_per_min"] == pytest.approx(done / wall * 60)
        assert level["overhead_s_per_trial"] == pytest.approx(c * wall / done - level["in_trial_s"])
        assert level["cpus_per_trial"] == pytest.approx(cpus / c)
        running = level["running_s"]
        assert running == pytest.approx(wall - level["first_trial_s"])
        assert level["running_trials_per_min"] == pytest.approx(done / running * 60)
        assert level["running_overhead_s_per_trial"] == pytest.approx(
            c * running / done - level["in_trial_s"]
        )
    assert figures["ray_start_stop_s"] > 0
    assert figures["command"] == (
        f"mtlstudy bench scaling --trials {_TRIALS} --concurrency 1 2 --epochs 1"
    )


@pytest.mark.slow  # one study per concurrency level
def test_table_has_one_row_per_level(bench: tuple[dict[str, Any], Path]) -> None:
    figures, _ = bench
    lines = format_table(figures).splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:1] == ["concurrency"])
    rows = [line.split() for line in lines[header + 1 : header + 1 + len(_LEVELS)]]
    assert [int(row[0]) for row in rows] == list(_LEVELS)
    for row, level in zip(rows, figures["levels"], strict=True):
        assert row[3] == f"{_TRIALS}/{_TRIALS}"
        assert float(row[8]) == pytest.approx(level["trials_per_min"], abs=0.05)
        assert float(row[9]) == pytest.approx(level["overhead_s_per_trial"], abs=0.005)
        assert float(row[11]) == pytest.approx(level["running_overhead_s_per_trial"], abs=0.005)
    assert any("overhead s (per trial) = concurrency × W" in line for line in lines)


def test_bad_concurrency_is_one_line_without_traceback() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "study.cli", "bench", "scaling", "--concurrency", "0"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "expected a positive integer, got 0" in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--trials", "2", "--concurrency", "4"], "concurrency 4 exceeds 2 trials"),
        (["--concurrency", "2", "2"], "listed twice"),
    ],
)
def test_bad_levels_fail_before_ray_starts(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["bench", "scaling", *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and message in captured.err
    assert captured.err.startswith("mtlstudy: error: bench scaling:")


def test_results_folder_must_be_empty(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "earlier").mkdir()
    assert main(["bench", "scaling", "--results", str(tmp_path)]) == 2
    assert "not empty" in capsys.readouterr().err
