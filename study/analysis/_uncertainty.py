"""Whether a method's win survives the seed spread: a paired bootstrap of the best
method's best configuration against the second method's, seed by seed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from study.analysis._pareto import configurations

__all__ = ["Comparison", "compare_best_two", "paired_bootstrap"]

TEST_NAME = "paired bootstrap over seeds"


def paired_bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    resamples: int = 10_000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """The mean of ``a − b`` over pairs, and the percentile interval of that mean when
    the pairs are resampled with replacement (``level`` coverage)."""
    differences = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if differences.size == 0:
        raise ValueError("no pairs to compare")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, differences.size, size=(resamples, differences.size))
    means = differences[picks].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(differences.mean()), float(low), float(high)


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

    @property
    def survives(self) -> bool:
        """Whether the interval leaves out no advantage at all."""
        return self.low > 0 if self.mode == "max" else self.high < 0

    def describe(self) -> str:
        verdict = "survives" if self.survives else "does not survive"
        return (
            f"{self.best} vs {self.second} on {self.metric}: {self.difference:+.3g} "
            f"(95% interval [{self.low:+.3g}, {self.high:+.3g}], {TEST_NAME}, "
            f"{self.seeds} seeds): the advantage {verdict} the seed spread"
        )


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
    return Comparison(
        metric=metric,
        mode=mode,
        best=_label(top.iloc[0]),
        second=_label(top.iloc[1]),
        difference=difference,
        low=low,
        high=high,
        seeds=len(paired),
    )


def _label(config: pd.Series) -> str:
    return f"{config['method']} ({config['architecture']})"
