"""The search bench's figures: pure functions of each search's reports, in report order,
as (cumulative trial-epochs, Δm), and the table that prints them; and the replayed
searches' figures as the HPO literature reports them (the anytime curve of the best final
Δm found, the speed-up to reach random search's median result, the regret at a budget)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "MARGIN",
    "Reach",
    "Reports",
    "anytime",
    "anytime_bands",
    "format_table",
    "landscape",
    "reach",
    "regret",
    "run_header",
    "speedups",
    "summarise",
    "threshold",
]

#: Within this many Δm points (Δm is in %) of the best any search found counts as reached.
MARGIN = 1.0

Reports = Sequence[tuple[int, float]]


@dataclass(frozen=True)
class Reach:
    """One search against the threshold: the trial-epochs at its first report at or above
    it (``None``: not within the budget), and its best Δm within the budget."""

    epochs: int | None
    best: float


def _within(reports: Reports, budget: int) -> list[float]:
    return [value for epochs, value in reports if epochs <= budget and math.isfinite(value)]


def threshold(runs: Sequence[Reports], budget: int, margin: float = MARGIN) -> float:
    """The best Δm any search reported within the budget, less ``margin``."""
    values = [value for reports in runs for value in _within(reports, budget)]
    if not values:
        raise ValueError("no search reported a finite Δm within the budget")
    return max(values) - margin


def reach(reports: Reports, bar: float, budget: int) -> Reach:
    """When ``reports`` (in report order) first reached ``bar``, and its best Δm."""
    first = next(
        (
            epochs
            for epochs, value in reports
            if epochs <= budget and math.isfinite(value) and value >= bar
        ),
        None,
    )
    values = _within(reports, budget)
    return Reach(epochs=first, best=max(values) if values else math.nan)


def _epochs(reaches: Sequence[Reach]) -> list[int | None]:
    return [r.epochs for r in reaches]


def _median(values: list[float]) -> float | None:
    # Not reached counts as beyond the budget: the median is then None once half are.
    middle = statistics.median(values)
    return None if math.isinf(middle) else middle


def summarise(
    runs: Mapping[str, Sequence[Reports]], budget: int, margin: float = MARGIN
) -> dict[str, Any]:
    """Per strategy (its searches, one per seed): the trial-epochs to the common threshold
    (median, min, max over the searches that reached it, and how many did), the median best
    Δm; and the ratio of the medians of ``tpe+asha`` and ``random``."""
    every = [r for searches in runs.values() for r in searches]
    best = threshold(every, budget, margin=0.0)
    bar = best - margin
    strategies: dict[str, Any] = {}
    for name, searches in runs.items():
        reaches = [reach(r, bar, budget) for r in searches]
        reached = [r.epochs for r in reaches if r.epochs is not None]
        bests = [r.best for r in reaches if math.isfinite(r.best)]
        strategies[name] = {
            "epochs_to_threshold": _epochs(reaches),
            "median_epochs": _median([math.inf if e is None else e for e in _epochs(reaches)]),
            "min_epochs": min(reached, default=None),
            "max_epochs": max(reached, default=None),
            "reached": len(reached),
            "searches": len(reaches),
            "best_delta_m": [r.best if math.isfinite(r.best) else None for r in reaches],
            "median_best_delta_m": statistics.median(bests) if bests else None,
        }
    return {
        "threshold": bar,
        "best_delta_m": best,
        "margin": margin,
        "budget": budget,
        "strategies": strategies,
        "ratio": _ratio(strategies, budget),
    }


def _ratio(strategies: Mapping[str, Any], budget: int) -> dict[str, Any] | None:
    """Median trial-epochs of tpe+asha over random's: its value, or a bound where one
    median is beyond the budget (that median is then larger than the budget), or nothing
    where both are."""
    if "tpe+asha" not in strategies or "random" not in strategies:
        return None
    asha = strategies["tpe+asha"]["median_epochs"]
    rand = strategies["random"]["median_epochs"]
    ratio: dict[str, Any] = {"value": None, "upper": None, "lower": None, "met": None}
    if asha is not None and rand is not None:
        ratio.update(value=asha / rand, met=asha / rand <= 1 / 3)
    elif asha is not None:
        # Random's median is beyond the budget, so the ratio is below asha / budget; that
        # settles the target only when the bound itself is within it.
        ratio.update(upper=asha / budget, met=True if asha / budget <= 1 / 3 else None)
    elif rand is not None:
        # TPE+ASHA's median is beyond the budget: the ratio is above budget / random's.
        ratio.update(lower=budget / rand, met=False)
    return ratio


def _epochs_cell(value: float | None, budget: int) -> str:
    return f"> {budget}" if value is None else f"{value:g}"


def _ratio_text(ratio: Mapping[str, Any], budget: int) -> str:
    if ratio["value"] is not None:
        text = f"{ratio['value']:.2f}"
    elif ratio["upper"] is not None:
        text = f"< {ratio['upper']:.2f} (random's median is beyond the budget of {budget})"
    elif ratio["lower"] is not None:
        text = f"> {ratio['lower']:.2f} (TPE+ASHA's median is beyond the budget of {budget})"
    else:
        text = f"unknown (both medians are beyond the budget of {budget})"
    verdict = {True: "met", False: "missed", None: "not settled"}[ratio["met"]]
    return f"{text}; target ≤ 1/3: {verdict}"


def run_header(figures: Mapping[str, Any], default_command: str) -> list[str]:
    """A search benchmark's first lines: the machine, date and load, then the command."""
    load = figures["load_average"]
    return [
        f"{figures['machine']}; {figures['date']}; load average {load['before']:.1f} before, "
        f"{load['after']:.1f} after",
        f"command: {figures.get('command', default_command)}",
    ]


def format_table(figures: dict[str, Any]) -> str:
    """The settings, the threshold, then one row per strategy and the ratio to random."""
    settings, summary = figures["settings"], figures["summary"]
    budget = settings["budget"]
    lines = [
        *run_header(figures, "(measure_search)"),
        f"synthetic {settings['image_size']} px, {settings['train_samples']}+"
        f"{settings['val_samples']} images, tasks {', '.join(settings['tasks'])}; methods "
        f"{', '.join(settings['methods'])}; {settings['epochs']} epochs a trial, "
        f"{settings['concurrency']} at a time; {settings['seeds']} search seed(s) × "
        f"{budget} trial-epochs",
        f"threshold: best Δm {summary['best_delta_m']:+.2f} % − {summary['margin']:g} = "
        f"{summary['threshold']:+.2f} %",
        f"{'strategy':10s}{'to threshold':>14s}{'min–max':>11s}{'reached':>9s}"
        f"{'best Δm %':>11s}{'trials':>8s}{'wall s':>8s}  per seed: to threshold (best Δm %)",
    ]
    for name, cell in summary["strategies"].items():
        runs = [s for s in figures["searches"] if s["strategy"] == name]
        span = "–" if cell["min_epochs"] is None else f"{cell['min_epochs']}–{cell['max_epochs']}"
        best = cell["median_best_delta_m"]
        lines.append(
            f"{name:10s}{_epochs_cell(cell['median_epochs'], budget):>14s}{span:>11s}"
            f"{cell['reached']:>5d}/{cell['searches']:<3d}"
            f"{'–' if best is None else f'{best:+.2f}':>11s}"
            f"{statistics.median(s['trials'] for s in runs):>8g}"
            f"{sum(s['wall_s'] for s in runs):>8.0f}  "
            + ", ".join(
                f"{'–' if e is None else e} ({'–' if b is None else f'{b:+.2f}'})"
                for e, b in zip(cell["epochs_to_threshold"], cell["best_delta_m"], strict=True)
            )
        )
    lines.append(
        "to threshold: median trial-epochs over seeds (a seed that did not reach it counts "
        "as beyond the budget; per seed: –); best Δm: median over seeds; trials: median per "
        "search; wall: all seeds"
    )
    ratio = summary["ratio"]
    if ratio is not None:
        lines.append(f"TPE+ASHA / random, median trial-epochs: {_ratio_text(ratio, budget)}")
    errors = sum(s["errors"] for s in figures["searches"])
    lines.append(f"failed trials: {errors}; bench wall {figures['wall_s']:.0f} s")
    return "\n".join(lines)


#: A finished trial: (trial-epochs spent when it finished, its final Δm).
Finals = Sequence[tuple[int, float]]


def anytime(finals: Finals, budget: int) -> np.ndarray:
    """The best final Δm found after each trial-epoch 1 … ``budget`` (−inf before the
    first trial finished)."""
    curve = np.full(budget, -np.inf)
    for epochs, value in finals:
        if epochs <= budget and math.isfinite(value):
            curve[epochs - 1] = max(curve[epochs - 1], value)
    return np.maximum.accumulate(curve)


def anytime_bands(searches: Sequence[Finals], budget: int) -> dict[str, np.ndarray]:
    """Over the searches, after each trial-epoch: the median and the quartiles of the best
    final Δm found (−inf where that share of the searches has found none yet)."""
    curves = np.stack([anytime(finals, budget) for finals in searches])
    # The empirical quantile is one search's own value: nothing interpolates with −inf.
    q25, median, q75 = np.quantile(curves, [0.25, 0.5, 0.75], axis=0, method="inverted_cdf")
    return {"trial_epochs": np.arange(1, budget + 1), "median": median, "q25": q25, "q75": q75}


def _first_reach(curve: np.ndarray, target: float) -> int | None:
    reached = np.flatnonzero(curve >= target)
    return int(reached[0]) + 1 if reached.size else None


def speedups(
    runs: Mapping[str, Sequence[Finals]], budget: int, baseline: str = "random"
) -> dict[str, Any]:
    """The target is ``baseline``'s median best final Δm at the budget; per strategy, the
    trial-epochs its median curve needs to reach it, and the speed-up: the baseline's
    trial-epochs ÷ the strategy's (``None`` where it does not reach it within the budget;
    the speed-up is then below ``upper``)."""
    medians = {name: anytime_bands(searches, budget)["median"] for name, searches in runs.items()}
    target = float(medians[baseline][-1])
    if not math.isfinite(target):
        raise ValueError(f"most {baseline} searches finished no trial within {budget}")
    base = _first_reach(medians[baseline], target)
    assert base is not None  # its own median reaches its last value
    figures: dict[str, Any] = {"target": target, "baseline": baseline, "strategies": {}}
    for name, median in medians.items():
        epochs = _first_reach(median, target)
        figures["strategies"][name] = {
            "epochs_to_target": epochs,
            "speedup": None if epochs is None else base / epochs,
            "upper": base / budget if epochs is None else None,
        }
    return figures


def regret(searches: Sequence[Finals], budget: int, best: float) -> dict[str, float]:
    """``best`` (the table's best final Δm) less the best final Δm each search found within
    the budget: the median and quartiles over the searches (inf: found none)."""
    values = np.array([best - anytime(finals, budget)[-1] for finals in searches])
    q25, median, q75 = np.quantile(values, [0.25, 0.5, 0.75], method="inverted_cdf")
    return {"median": float(median), "q25": float(q25), "q75": float(q75)}


def landscape(curves: np.ndarray, seed_finals: np.ndarray) -> dict[str, Any]:
    """What decides whether early stopping can work on a table (LCBench's analysis): the
    Spearman correlation, across configurations, of each epoch's Δm (the mean over seeds)
    with the final one, and of one seed's final Δm with another's.

    ``curves`` is (configurations, epochs); ``seed_finals`` (configurations, seeds).
    """
    from scipy.stats import spearmanr

    final = curves[:, -1]
    to_final = {
        str(epoch + 1): float(spearmanr(curves[:, epoch], final, nan_policy="omit").statistic)
        for epoch in range(curves.shape[1] - 1)
    }
    pairs = [
        float(spearmanr(seed_finals[:, a], seed_finals[:, b], nan_policy="omit").statistic)
        for a in range(seed_finals.shape[1])
        for b in range(a + 1, seed_finals.shape[1])
    ]
    return {
        "spearman_to_final": to_final,
        "spearman_between_seeds": float(np.mean(pairs)) if pairs else None,
    }
