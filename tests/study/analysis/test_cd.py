"""The critical-difference ranking: the Nemenyi critical difference against Demšar (2006),
the Friedman test against a hand computation, and the diagram on plotted data."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from study.analysis import PlotDataError, cd_data, cliques, load_results, make_plot, nemenyi_cd

# Demšar (2006), Table 5(a): q_0.05 of the two-tailed Nemenyi test for k = 2 … 10.
DEMSAR_Q05 = [1.960, 2.343, 2.569, 2.728, 2.850, 2.949, 3.031, 3.102, 3.164]
DEMSAR_Q10 = [1.645, 2.052, 2.291, 2.459, 2.589, 2.693, 2.780, 2.855, 2.920]


@pytest.mark.parametrize(("alpha", "table"), [(0.05, DEMSAR_Q05), (0.10, DEMSAR_Q10)])
def test_the_critical_difference_uses_demsars_q(alpha: float, table: list[float]) -> None:
    for k, q in enumerate(table, start=2):
        # With N = k(k+1)/6 blocks the square root is 1 and CD is q itself.
        assert nemenyi_cd(k, 1, alpha) * math.sqrt(6 / (k * (k + 1))) == pytest.approx(q, abs=2e-3)


def test_demsars_worked_example() -> None:
    # Four C4.5 variants on 14 data sets: CD = 2.569 · √(4·5 / (6·14)) = 1.25.
    assert nemenyi_cd(4, 14) == pytest.approx(1.25, abs=5e-3)


def _trials() -> pd.DataFrame:
    """Three methods, two tasks, three seeds; the third seed lacks method c."""
    values = {  # seed: {method: (semseg mIoU ↑, depth RMSE ↓)}
        0: {"a": (0.9, 1.0), "b": (0.8, 2.0), "c": (0.7, 3.0)},
        1: {"a": (0.9, 2.0), "b": (0.7, 1.0), "c": (0.8, 3.0)},
        2: {"a": (0.5, 1.0), "b": (0.6, 1.5)},
    }
    rows = []
    for seed, methods in values.items():
        for method, (miou, rmse) in methods.items():
            rows.append(
                {
                    "trial_id": f"{method}{seed}",
                    "kind": "multi_task",
                    "status": "completed",
                    "method": method,
                    "architecture": "hard_sharing",
                    "dataset_key": "nyud",
                    "tasks": ["semseg", "depth"],
                    "seed": seed,
                    "final.semseg.miou": miou,
                    "final.depth.rmse": rmse,
                }
            )
    return pd.DataFrame(rows)


def test_friedman_and_nemenyi_on_a_hand_worked_example() -> None:
    data = cd_data(_trials())
    # Blocks (semseg, depth) × seeds 0, 1; ranks a b c: 1 2 3 | 1 3 2 | 1 2 3 | 2 1 3.
    assert data["method"].tolist() == ["a", "b", "c"]
    assert data["mean_rank"].tolist() == [1.25, 2.0, 2.75]
    # χ²_F = 12N/(k(k+1)) · (Σ R_j² − k(k+1)²/4) = 4 · (1.5625 + 4 + 7.5625 − 12) = 4.5
    assert data.attrs["friedman"] == pytest.approx(4.5)
    assert data.attrs["p_value"] == pytest.approx(math.exp(-4.5 / 2))  # χ² with 2 df
    assert data.attrs["blocks"] == 4 and data.attrs["dropped"] == 2
    assert data.attrs["cd"] == pytest.approx(2.343 * math.sqrt(3 * 4 / (6 * 4)), abs=1e-3)
    assert data.attrs["cliques"] == [["a", "b", "c"]]  # 2.75 − 1.25 < 1.657


def test_cliques_are_the_maximal_groups_within_the_cd() -> None:
    ranks = pd.Series({"a": 1.0, "b": 1.5, "c": 2.4, "d": 3.6, "e": 3.8})
    assert cliques(ranks, 1.5) == [["a", "b", "c"], ["c", "d", "e"]]
    assert cliques(ranks, 0.1) == []


def test_too_few_methods_is_one_clear_line() -> None:
    two = _trials()
    with pytest.raises(PlotDataError, match="at least three methods, found 2"):
        cd_data(two[two["method"] != "c"])


def test_the_diagram_draws_every_method_and_the_cd(store: Path) -> None:
    plot = make_plot("cd", load_results(store))
    assert sorted(plot.data["method"]) == ["amtl", "dwa", "ew"]
    assert plot.data.attrs["blocks"] == 8  # 2 architectures × 2 tasks × 2 seeds
    texts = [t.get_text() for t in plot.figure.axes[0].texts]
    for name, rank in zip(plot.data["method"], plot.data["mean_rank"], strict=True):
        assert f"{name} ({rank:.2f})" in texts
    assert f"CD = {plot.data.attrs['cd']:.2f}" in texts
    assert "Friedman" in plot.figure.axes[0].get_title()
