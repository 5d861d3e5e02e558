"""Whether a method's win survives the seed spread: the best method's best configuration
against the second method's, seed by seed, with SciPy's paired BCa bootstrap interval and
an exact sign-flip permutation test."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats

from study.analysis._pareto import configurations

__all__ = [
    "COARSE_BELOW",
    "Comparison",
    "compare_best_two",
    "paired_bootstrap",
    "paired_permutation",
]

TEST_NAME = "paired BCa bootstrap (scipy.stats.bootstrap) over seeds"
PERMUTATION_NAME = "sign-flip permutation test (scipy.stats.permutation_test)"
#: With fewer seeds than this, an interval over seeds is coarse and is said to be.
COARSE_BELOW = 5


def _mean_difference(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x - y, axis=axis)


def _pairs(a: Sequence[float], b: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.size == 0 or x.shape != y.shape:
        raise ValueError(
            f"expected two equally long, non-empty lists of pairs; got {x.size}, {y.size}"
        )
    return x, y


def paired_bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    resamples: int = 10_000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """The mean of ``a − b`` over pairs and its ``level`` BCa interval from
    ``scipy.stats.bootstrap(paired=True, method="BCa")``. Differences that are all equal
    give that difference as both ends (no spread to resample)."""
    x, y = _pairs(a, b)
    difference = float(np.mean(x - y))
    if np.ptp(x - y) == 0:
        return difference, difference, difference
    result = stats.bootstrap(
        (x, y),
        _mean_difference,
        paired=True,
        vectorized=True,
        method="BCa",
        n_resamples=resamples,
        confidence_level=level,
        rng=np.random.default_rng(seed),
    )
    low, high = result.confidence_interval
    return difference, float(low), float(high)


def paired_permutation(a: Sequence[float], b: Sequence[float], seed: int = 0) -> float:
    """The two-sided p-value of the mean of ``a − b`` under random swaps within pairs,
    exact (all 2ⁿ sign flips) up to 13 pairs. With n pairs it is never below 2/2ⁿ."""
    x, y = _pairs(a, b)
    if np.ptp(x - y) == 0 and x[0] == y[0]:
        return 1.0
    result = stats.permutation_test(
        (x, y),
        _mean_difference,
        permutation_type="samples",
        vectorized=True,
        n_resamples=9_999,
        rng=np.random.default_rng(seed),
    )
    return float(result.pvalue)


@dataclass(frozen=True)
class Comparison:
    metric: str
    mode: Literal["min", "max"]
    best: str
    second: str
    #: Mean over seeds of best − second (positive: the best is ahead, for ``max``).
    difference: float
    low: float
    high: float
    seeds: int
    #: The permutation test's two-sided p-value.
    p_value: float = float("nan")
    test: str = TEST_NAME

    @property
    def survives(self) -> bool:
        """Whether the interval leaves out no advantage at all."""
        return self.low > 0 if self.mode == "max" else self.high < 0

    @property
    def coarse(self) -> bool:
        """Fewer than :data:`COARSE_BELOW` seeds: the interval rests on a handful of values."""
        return self.seeds < COARSE_BELOW

    def describe(self) -> str:
        verdict = "survives" if self.survives else "does not survive"
        text = (
            f"{self.best} vs {self.second} on {self.metric}: {self.difference:+.3g} "
            f"(95% interval [{self.low:+.3g}, {self.high:+.3g}], {self.test}, "
            f"n = {self.seeds} seeds; {PERMUTATION_NAME}: p = {self.p_value:.3g}): "
            f"the advantage {verdict} the seed spread"
        )
        if self.coarse:
            floor = 2 / 2**self.seeds
            text += (
                f". With {self.seeds} seeds (fewer than {COARSE_BELOW}) this interval is coarse: "
                f"it rests on {self.seeds} values, and no p-value can go below {floor:.3g}"
            )
        return text


def compare_best_two(
    trials: pd.DataFrame, metric: str = "delta_m", mode: Literal["min", "max"] = "max"
) -> Comparison | None:
    """The best configuration of the best two methods (by their mean ``metric``),
    compared over the seeds both completed; ``None`` with fewer than two methods or
    fewer than two shared seeds."""
    if metric not in trials:
        return None
    table = configurations(trials, [metric])
    table = table[table["eligible"] & table[f"{metric}_mean"].notna()]
    best = table.sort_values(f"{metric}_mean", ascending=mode == "min", kind="stable")
    top = best.drop_duplicates("method").head(2)
    if len(top) < 2:
        return None
    rows = trials[trials["status"] == "completed"]
    ids = rows["config_id"] if "config_id" in rows else rows["trial_id"]
    seeds = rows["seed"] if "seed" in rows else pd.Series(0, index=rows.index)
    values = [
        pd.Series(
            rows.loc[ids == c, metric].astype(float).to_numpy(),
            index=seeds[ids == c].to_numpy(),
        )
        for c in top["config_id"]
    ]
    paired = pd.concat(values, axis=1, join="inner").dropna()
    if len(paired) < 2:
        return None
    difference, low, high = paired_bootstrap(paired[0], paired[1])
    p_value = paired_permutation(paired[0], paired[1])
    return Comparison(
        metric=metric,
        mode=mode,
        best=_label(top.iloc[0]),
        second=_label(top.iloc[1]),
        difference=difference,
        low=low,
        high=high,
        seeds=len(paired),
        p_value=p_value,
    )


def _label(config: pd.Series) -> str:
    return f"{config['method']} ({config['architecture']})"
