"""The terminal leaderboard `mtlstudy run` prints: 120 columns, the baselines first, ↑/↓,
and the line that defines Δm, on the shared analysis store."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pandas as pd
import pytest

from study.analysis import leaderboard, load_results, study_summary

TASKS = ["semseg", "depth"]


@pytest.fixture(scope="module")
def study(store: Path) -> pd.DataFrame:
    trials = load_results(store).trials
    return trials[trials["study"] == "rcm_resnet-seed1"]


def test_fits_120_columns_with_the_baselines_first_and_delta_m_defined(
    study: pd.DataFrame,
) -> None:
    lines = leaderboard(study, TASKS).splitlines()
    assert max(len(line) for line in lines) <= 120
    header = lines[0]
    assert header.split()[:2] == ["trial", "method"]
    assert "semseg mIoU ↑" in header and "depth RMSE (m) ↓" in header
    assert header.endswith("Δm (%) ↑") and "lr" not in header.split()
    baselines = lines[1].split()
    assert baselines[:2] == ["baselines", "single-task"] and baselines[-1] == "+0.00"
    assert baselines[2] == "0.55"  # semseg mIoU of the study's baseline (b-rcm1-semseg)
    ranked = [line.split()[0] for line in lines[2:-3]]
    completed = study[(study["status"] == "completed") & (study["kind"] == "multi_task")]
    assert sorted(ranked) == sorted(completed["trial_id"])  # the others' epochs differ
    best = completed.sort_values("delta_m", ascending=False)["trial_id"].iloc[0]
    assert ranked[0] == best
    assert lines[-3].startswith("(4 more metric column(s) and the hyperparameters")
    assert lines[-2] == "not ranked: 1 stopped early, 1 running, 1 failed"
    assert lines[-1].startswith("Δm (%) = 100/T·Σ_t ±(M_t−B_t)/B_t")
    assert lines[-1].endswith("B: semseg mIoU 0.55, depth RMSE (m) 1.4")


def test_wide_adds_every_metric_and_the_hyperparameters(study: pd.DataFrame) -> None:
    header = leaderboard(study, TASKS, wide=True).splitlines()[0]
    for name in ("depth log RMSE ↓", "depth δ<1.25³ ↑", "lr", "dwa.temperature"):
        assert name in header
    assert len(header) > 120


def test_run_wide_prints_the_wide_leaderboard(study: pd.DataFrame) -> None:
    """``mtlstudy run --wide``: the summary's leaderboard with every column."""
    objectives = [("delta_m", "max")]
    narrow = study_summary(study, TASKS, objectives).splitlines()[0]
    wide = study_summary(study, TASKS, objectives, wide=True).splitlines()[0]
    assert "lr" not in narrow.split() and "lr" in wide.split()
    assert wide == leaderboard(study, TASKS, wide=True).splitlines()[0]
    from study.cli import main

    with pytest.raises(SystemExit), contextlib.redirect_stdout(io.StringIO()) as out:
        main(["run", "--help"])
    assert "--wide" in out.getvalue()


def test_the_summary_over_repeats_defines_delta_m_too(study: pd.DataFrame) -> None:
    trials = study.assign(config_id=study["method"])
    text = study_summary(trials, TASKS, [("delta_m", "max"), ("gflops", "min")], repeats=2)
    first = text.split("\n\n")[0].splitlines()
    assert "Δm (%) ↑" in first[0] and "semseg mIoU ↑" in first[0]
    assert first[-1].startswith("Δm (%) = ")
    assert "Pareto front (Δm (%) ↑, GFLOPs ↓)" in text
