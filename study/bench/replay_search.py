"""Many replayed searches per strategy, and the figures the HPO literature reports for
them (``mtlstudy bench search``): the anytime curve, the speed-up over random search and
the regret at a fixed budget. Each search is one :func:`study.bench.replay.run_strategy`.
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from study.bench.replay import STRATEGIES, Search, TableCurves, run_strategy

__all__ = ["format_replay", "measure_replay", "run_strategies"]


def run_strategies(
    table: TableCurves,
    strategies: Sequence[str],
    seeds: int,
    budget: int,
    log: Callable[[str], None] = lambda line: None,
    **options: Any,
) -> dict[str, list[Search]]:
    """``seeds`` searches of each strategy."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    runs: dict[str, list[Search]] = {}
    for strategy in strategies:
        runs[strategy] = [
            run_strategy(table, strategy, seed, budget, **options) for seed in range(seeds)
        ]
        log(f"{strategy}: {seeds} searches")
    return runs


def measure_replay(
    table_path: Path | None = None,
    strategies: Sequence[str] = tuple(STRATEGIES),
    seeds: int = 100,
    budget: int = 360,
    concurrency: int = 4,
    grace_period: int = 1,
    reduction_factor: float = 2.0,
    startup_trials: int = 10,
    plot: Path | None = None,
    log: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """``seeds`` searches of each strategy against the table; the anytime bands, the
    speed-ups to random search's median result and the regret at the budget."""
    from study.bench._search_figures import anytime_bands, landscape, regret, speedups
    from study.bench.table import TABLE_PATH, read_table

    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown or "random" not in strategies:
        raise ValueError(
            f"strategies {list(strategies)}: expected random and some of {list(STRATEGIES)}"
        )
    if min(seeds, budget, concurrency) < 1:
        raise ValueError("seeds, budget and concurrency must be positive")
    if not reduction_factor > 1:
        raise ValueError(f"reduction factor {reduction_factor}: expected more than 1")
    frame, meta = read_table(table_path or TABLE_PATH)
    table = TableCurves.from_frame(frame)
    if not 1 <= grace_period <= table.epochs:
        raise ValueError(f"grace period {grace_period}: expected 1 to {table.epochs}")
    if budget < table.epochs:
        raise ValueError(f"a budget of {budget} trial-epochs is less than one trial")
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    runs = run_strategies(
        table,
        strategies,
        seeds,
        budget,
        log=log,
        concurrency=concurrency,
        grace_period=grace_period,
        reduction_factor=reduction_factor,
        startup_trials=startup_trials,
    )
    finals = {name: [search.finals for search in searches] for name, searches in runs.items()}
    speed = speedups(finals, budget)
    bands = {name: anytime_bands(f, budget) for name, f in finals.items()}
    if plot is not None:
        _draw(bands, speed["target"], plot)
    return {
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cpus",
        "date": date.today().isoformat(),
        "load_average": {"before": load_before, "after": os.getloadavg()[0]},
        "settings": {
            "table": str(table_path or TABLE_PATH),
            "configurations": len(table.configs),
            "grid": meta.get("configurations"),
            "epochs": table.epochs,
            "seeds": seeds,
            "budget": budget,
            "concurrency": concurrency,
            "grace_period": grace_period,
            "reduction_factor": reduction_factor,
            "startup_trials": startup_trials,
        },
        "table_best_final_delta_m": table.best_final,
        "landscape": landscape(
            table.curves, table.seed_finals if table.seed_finals is not None else np.empty((0, 0))
        ),
        "speedup_vs_random": {n: c["speedup"] for n, c in speed["strategies"].items()},
        "speedup": speed,
        "regret": {n: regret(f, budget, table.best_final) for n, f in finals.items()},
        "median_trials": {
            n: float(np.median([len(s.trials) for s in searches])) for n, searches in runs.items()
        },
        "anytime": {
            n: {k: [_number(v) for v in values] for k, values in b.items()}
            for n, b in bands.items()
        },
        "plot": None if plot is None else str(plot),
        "wall_s": round(time.perf_counter() - started, 1),
    }


def _number(value: Any) -> float | None:
    """A JSON number, ``None`` where there is none (−inf: nothing found yet)."""
    value = float(value)
    return value if math.isfinite(value) else None


def _draw(bands: Mapping[str, Mapping[str, np.ndarray]], target: float, path: Path) -> None:
    from study.analysis import draw_anytime, save_figure

    data = pd.concat(
        [pd.DataFrame({"strategy": name, **band}) for name, band in bands.items()],
        ignore_index=True,
    )
    fmt = path.suffix.lstrip(".") or "png"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(draw_anytime(data, target), path.parent, path.stem, formats=[fmt])


def format_replay(figures: Mapping[str, Any]) -> str:
    """The settings, then one row per strategy: speed-up, regret and trials."""
    from study.bench._search_figures import run_header

    settings, speed = figures["settings"], figures["speedup"]
    budget = settings["budget"]
    lines = [
        *run_header(figures, "(measure_replay)"),
        f"table {settings['table']}: {settings['configurations']} configurations × "
        f"{settings['epochs']} epochs (best final Δm {figures['table_best_final_delta_m']:+.2f} %)",
        f"{settings['seeds']} searches a strategy × {budget} trial-epochs, "
        f"{settings['concurrency']} trials at a time; ASHA grace {settings['grace_period']}, "
        f"reduction {settings['reduction_factor']:g}; TPE start-up {settings['startup_trials']}",
        f"target: random's median best final Δm at {budget} trial-epochs, {speed['target']:+.2f} %",
        f"{'strategy':15s}{'to target':>10s}{'speed-up':>10s}"
        f"{'regret median [IQR]':>26s}{'trials':>8s}",
    ]
    for name, cell in speed["strategies"].items():
        reg = figures["regret"][name]
        epochs = cell["epochs_to_target"]
        speedup = f"< {cell['upper']:.2f}" if epochs is None else f"{cell['speedup']:.2f}"
        spread = f"{reg['median']:.2f} [{reg['q25']:.2f}, {reg['q75']:.2f}]"
        lines.append(
            f"{name:15s}{'> ' + str(budget) if epochs is None else str(epochs):>10s}"
            f"{speedup:>10s}"
            f"{spread:>26s}"
            f"{figures['median_trials'][name]:>8g}"
        )
    lines.append(
        "to target: trial-epochs the median curve needs; speed-up: random's ÷ the "
        "strategy's; regret: the table's best final Δm less the best found at the budget "
        "(Δm points); trials: median per search"
    )
    shape = figures["landscape"]
    epochs = ", ".join(f"{k}: {v:.2f}" for k, v in shape["spearman_to_final"].items())
    between = shape["spearman_between_seeds"]
    lines.append(
        f"Spearman of each epoch's Δm with the final one, across configurations: {epochs}"
        + ("" if between is None else f"; of one seed's final Δm with another's: {between:.2f}")
    )
    if figures.get("plot"):
        lines.append(f"anytime curve: {figures['plot']}")
    lines.append(f"wall {figures['wall_s']:.0f} s")
    return "\n".join(lines)
