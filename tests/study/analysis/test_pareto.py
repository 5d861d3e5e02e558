"""The Pareto front on hand-made trials, configurations over repeats, and the ``pareto``
flag written into real trial files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from study.analysis import configurations, flag_pareto, pareto_mask
from study.store import load_trials, write_trial


def test_pareto_mask_on_a_hand_made_set() -> None:
    # (Δm ↑, GFLOPs ↓)
    values = np.array(
        [
            [1.0, 5.0],  # front: best Δm
            [0.5, 2.0],  # front
            [0.5, 3.0],  # dominated by row 1
            [-1.0, 1.0],  # front: cheapest
            [0.4, 2.0],  # dominated by row 1
            [0.5, 2.0],  # equal to row 1: on the front with it
            [np.nan, 0.1],  # no value: never on it
        ]
    )
    mask = pareto_mask(values, ["max", "min"])
    assert mask.tolist() == [True, True, False, True, False, True, False]


def test_pareto_mask_single_objective_is_the_best() -> None:
    assert pareto_mask(np.array([[3.0], [1.0], [2.0]]), ["min"]).tolist() == [False, True, False]


def _dominated_by_any(gains: np.ndarray, i: int) -> bool:
    others = np.delete(gains, i, axis=0)
    return bool(((others >= gains[i]).all(axis=1) & (others > gains[i]).any(axis=1)).any())


def test_two_objective_sweep_agrees_with_the_definition() -> None:
    # Small integers make ties and repeated points common.
    rng = np.random.default_rng(0)
    for trial in range(200):
        values = rng.integers(0, 5, size=(rng.integers(1, 25), 2)).astype(float)
        directions = [("max", "min"), ("min", "min"), ("max", "max")][trial % 3]
        gains = values * np.array([1.0 if d == "max" else -1.0 for d in directions])
        expected = [not _dominated_by_any(gains, i) for i in range(len(values))]
        assert pareto_mask(values, directions).tolist() == expected


def test_pareto_mask_of_three_objectives() -> None:
    values = np.array([[1.0, 1.0, 1.0], [2.0, 0.0, 1.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    assert pareto_mask(values, ["max", "max", "max"]).tolist() == [True, True, False, False]
    assert pareto_mask(np.empty((0, 2)), ["max", "min"]).tolist() == []


def _trial(trial_id: str, config_id: str, seed: int, delta: float, gflops: float, **extra):
    return {
        "trial_id": trial_id,
        "kind": "multi_task",
        "status": "completed",
        "method": "dwa" if config_id == "a" else "ew",
        "architecture": "hard_sharing",
        "config_id": config_id,
        "repeat": seed,
        "seed": seed,
        "delta_m": delta,
        "gflops": gflops,
        **extra,
    }


def test_configurations_group_repeats() -> None:
    trials = pd.DataFrame(
        [
            _trial("a0", "a", 0, 1.0, 2.0),
            _trial("a1", "a", 1, 3.0, 2.0),
            _trial("b0", "b", 0, 5.0, 1.0),
            _trial("b1", "b", 1, 0.0, 1.0, status="error"),
            _trial("c0", "c", 0, 9.0, 1.0, feasible=False),
        ]
    )
    table = configurations(trials, ["delta_m"], repeats=2).set_index("config_id")
    assert table.loc["a", "delta_m_mean"] == 2.0
    assert table.loc["a", "delta_m_std"] == np.std([1.0, 3.0], ddof=1)
    assert table.loc["a", "seeds"] == 2
    assert table.loc["a", "delta_m_n"] == 2
    assert table.loc["a", "method"] == "dwa"
    # Only completed repeats count towards the mean; a failed one makes it ineligible.
    assert table.loc["b", "delta_m_mean"] == 5.0
    assert table["eligible"].to_dict() == {"a": True, "b": False, "c": False}


def test_flag_pareto_writes_the_front_into_the_trial_files(tmp_path: Path) -> None:
    rows = [
        _trial("a0", "a", 0, 1.0, 2.0),
        _trial("a1", "a", 1, 3.0, 2.0),  # a: mean (2.0, 2.0), on the front
        _trial("b0", "b", 0, 1.0, 3.0),
        _trial("b1", "b", 1, 1.0, 3.0),  # b: dominated by a
        _trial("c0", "c", 0, 0.0, 1.0),
        _trial("c1", "c", 1, 0.0, 1.0),  # c: cheapest, on the front
        _trial("d0", "d", 0, 9.0, 9.0, feasible=False),
        _trial("d1", "d", 1, 9.0, 9.0, feasible=False),  # d: infeasible
        {"trial_id": "base", "kind": "single_task", "status": "completed", "gflops": 0.1},
    ]
    for row in rows:
        write_trial(tmp_path, "s", row)
    table = flag_pareto(tmp_path, "s", [("delta_m", "max"), ("gflops", "min")], repeats=2)
    assert dict(zip(table["config_id"], table["pareto"], strict=True)) == {
        "a": True,
        "b": False,
        "c": True,
        "d": False,
    }
    stored = load_trials(tmp_path / "s").set_index("trial_id")
    assert stored["pareto"].to_dict() == {
        "a0": True,
        "a1": True,
        "b0": False,
        "b1": False,
        "c0": True,
        "c1": True,
        "d0": False,
        "d1": False,
        "base": None,
    }
    assert stored.loc["a1", "delta_m"] == 3.0  # the rest of the row is kept
    # Flagging again rewrites nothing: every row already holds its flag.
    files = sorted((tmp_path / "s" / "trials").glob("*.parquet"))
    written = [f.stat().st_mtime_ns for f in files]
    flag_pareto(tmp_path, "s", [("delta_m", "max"), ("gflops", "min")], repeats=2)
    assert [f.stat().st_mtime_ns for f in files] == written
