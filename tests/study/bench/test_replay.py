"""The replayed search bench: the loop on a hand-made table whose stops and best-found
sequence are known, the anytime figures from hand-made finishes, and the CLI's JSON."""

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import Searcher

from study.bench._search_figures import anytime, anytime_bands, landscape, regret, speedups
from study.bench.replay import TableCurves, replay, run_strategy
from study.bench.table import grid, table_space, write_table
from study.cli import main

#: Four ``ew`` configurations told apart by their learning rate, and each one's Δm, the
#: same at every epoch (the seeds' mean: they differ by −1, 0 and +1).
RATES = (3e-4, 1e-3, 3e-3, 1e-2)
VALUES = (1.0, 3.0, 1.5, 4.0)
EPOCHS = 4


def _frame(values: tuple[float, ...] = VALUES, epochs: int = EPOCHS) -> pd.DataFrame:
    rows = [
        {
            "method": "ew",
            "optim/lr": lr,
            "optim/weight_decay": 1e-4,
            "seed": seed,
            "epoch": epoch,
            "delta_m": value + seed - 1,
        }
        for lr, value in zip(RATES, values, strict=True)
        for seed in range(3)
        for epoch in range(1, epochs + 1)
    ]
    return pd.DataFrame(rows)


class _InOrder(Searcher):
    """Proposes the table's configurations in a fixed order (the searcher is not under
    test here: the loop and the scheduler are)."""

    def __init__(self, rates: list[float]) -> None:
        super().__init__(metric="delta_m", mode="max")
        self.rates = list(rates)
        self.completed: list[tuple[str, float]] = []

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if not self.rates:
            return None
        return {"method": "ew", "optim": {"lr": self.rates.pop(0), "weight_decay": 1e-4}}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error=False) -> None:
        self.completed.append((trial_id, None if result is None else result["delta_m"]))


def test_the_table_averages_the_seeds_and_finds_the_nearest_configuration() -> None:
    table = TableCurves.from_frame(_frame())
    assert table.curves.shape == (4, EPOCHS) and table.epochs == EPOCHS
    by_rate = {c["optim/lr"]: table.curves[i, 0] for i, c in enumerate(table.configs)}
    assert by_rate == dict(zip(RATES, VALUES, strict=True))
    assert table.best_final == 4.0
    # 2.5e-3 is nearest 3e-3 on the log scale; the weight decay is the table's only one.
    near = table.lookup({"method": "ew", "optim": {"lr": 2.5e-3, "weight_decay": 1e-5}})
    assert table.configs[near]["optim/lr"] == 3e-3
    with pytest.raises(ValueError, match="no configuration of 'dwa'"):
        table.lookup({"method": "dwa", "optim": {"lr": 1e-3, "weight_decay": 1e-4}})


def test_the_landscape_says_how_early_epochs_and_seeds_rank_configurations() -> None:
    table = TableCurves.from_frame(_frame())
    # Each configuration's seeds end at its value −1, +0, +1: one order for every seed.
    assert table.seed_finals is not None
    np.testing.assert_array_equal(table.seed_finals[:, 1], table.curves[:, -1])
    shape = landscape(table.curves, table.seed_finals)
    assert shape["spearman_to_final"] == {"1": 1.0, "2": 1.0, "3": 1.0}
    assert shape["spearman_between_seeds"] == 1.0
    # An early epoch that ranks the configurations backwards: −1.
    curves = np.array([[4.0, 1.0], [3.0, 2.0], [2.0, 3.0], [1.0, 4.0]])
    seeds = np.array([[1.0, 2.0], [2.0, 1.0], [3.0, 4.0], [4.0, 3.0]])
    shape = landscape(curves, seeds)
    assert shape["spearman_to_final"] == {"1": pytest.approx(-1.0)}
    assert shape["spearman_between_seeds"] == pytest.approx(0.6)


def test_asha_stops_the_trial_below_the_rung_median_at_its_first_rung() -> None:
    table = TableCurves.from_frame(_frame())
    searcher = _InOrder(list(RATES))
    scheduler = ASHAScheduler(
        time_attr="training_iteration", max_t=EPOCHS, grace_period=1, reduction_factor=2
    )
    search = replay(table, searcher, scheduler, budget=13, concurrency=1)
    # Rung 1 holds 1.0 and 3.0 when the third trial (1.5) reports: their median, 2.0, is
    # above it, so it stops after one epoch; the others are at or above every cutoff.
    assert search.stops() == {0: 4, 1: 4, 2: 1, 3: 4}
    assert search.finals == [(4, 1.0), (8, 3.0), (13, 4.0)]
    assert list(anytime(search.finals, 13)) == [-math.inf] * 3 + [1.0] * 4 + [3.0] * 5 + [4.0]
    assert [value for _, value in searcher.completed] == [1.0, 3.0, 1.5, 4.0]


def test_concurrent_trials_report_in_turn_and_the_budget_ends_the_search() -> None:
    table = TableCurves.from_frame(_frame())
    search = replay(table, _InOrder(list(RATES)), FIFOScheduler(), budget=11, concurrency=2)
    order = [(trial, epoch) for _, trial, epoch, _ in search.reports]
    assert order == [
        *[(t, e) for e in range(1, 5) for t in (0, 1)],  # both run to their end in turn
        (2, 1), (3, 1), (2, 2),  # the next two start together; the budget cuts them
    ]  # fmt: skip
    assert search.finals == [(7, 1.0), (8, 3.0)]
    assert [r[0] for r in search.reports] == list(range(1, 12))


def test_a_strategy_replays_the_same_with_the_same_seed() -> None:
    table = TableCurves.from_frame(_frame())
    first = run_strategy(table, "tpe+asha", seed=3, budget=20, startup_trials=2)
    again = run_strategy(table, "tpe+asha", seed=3, budget=20, startup_trials=2)
    assert first.reports == again.reports and first.trials == again.trials
    assert len(first.reports) == 20 and set(first.trials) <= set(range(4))


def test_anytime_bands_speedups_and_regret() -> None:
    assert list(anytime([(2, 1.0), (3, math.nan), (4, 0.5)], 5)) == [-math.inf, 1, 1, 1, 1]
    random = [[(10, 1.0)], [(20, 2.0)], [(30, 3.0)]]
    fast = [[(5, 2.0)], [(5, 2.5)], [(40, 0.0)]]
    never = [[(10, 0.5)]] * 3
    bands = anytime_bands(random, 40)
    # Three searches: the median is the middle one's value, −inf until two have found one.
    assert bands["median"][18] == -math.inf and bands["median"][19] == 1.0
    assert bands["median"][-1] == 2.0 and bands["q75"][-1] == 3.0 and bands["q25"][-1] == 1.0
    figures = speedups({"random": random, "fast": fast, "never": never}, budget=40)
    assert figures["target"] == 2.0
    cells = figures["strategies"]
    assert cells["random"] == {"epochs_to_target": 30, "speedup": 1.0, "upper": None}
    assert cells["fast"] == {"epochs_to_target": 5, "speedup": 6.0, "upper": None}
    assert cells["never"] == {"epochs_to_target": None, "speedup": None, "upper": 0.75}
    assert regret(random, 40, best=5.0) == {"median": 3.0, "q25": 2.0, "q75": 4.0}
    with pytest.raises(ValueError, match="finished no trial"):
        speedups({"random": [[(50, 1.0)]] * 3}, budget=40)


def test_the_grid_spans_each_range_of_the_default_space() -> None:
    configs = grid(table_space())
    assert len(configs) == 320
    rates = sorted({c["optim/lr"] for c in configs})
    assert len(rates) == 5 and rates[0] == 3e-4 and rates[-1] == 1e-2
    famo = [c for c in configs if c["method"] == "famo"]
    assert len(famo) == 5 * 4 * 2 * 2


def test_the_cli_prints_the_speedups_as_json_and_draws_the_curve(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "table.parquet"
    frame = _frame(epochs=6)
    write_table(path, frame.to_dict("records"), {"configurations": 4})
    plot = tmp_path / "anytime.png"
    argv = ["bench", "search", "--table", str(path), "--seeds", "3", "--budget", "30"]
    argv += ["--strategies", "random", "tpe+asha", "--plot", str(plot), "--json"]
    assert main(argv) == 0
    figures = json.loads(capsys.readouterr().out)
    assert set(figures["speedup_vs_random"]) == {"random", "tpe+asha"}
    assert figures["speedup_vs_random"]["random"] == 1.0
    assert figures["settings"]["configurations"] == 4
    assert set(figures["regret"]["tpe+asha"]) == {"median", "q25", "q75"}
    assert len(figures["anytime"]["random"]["median"]) == 30
    assert plot.read_bytes().startswith(b"\x89PNG")
    assert np.isfinite(figures["table_best_final_delta_m"])
    assert set(figures["landscape"]["spearman_to_final"]) == {"1", "2", "3", "4", "5"}


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--strategies", "tpe"], "expected random and some of"),
        (["--budget", "3"], "less than one trial"),
        (["--grace-period", "20"], "expected 1 to 6"),
    ],
)
def test_bad_replay_arguments_are_one_line(
    argv: list[str], says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "table.parquet"
    write_table(path, _frame(epochs=6).to_dict("records"), {"configurations": 4})
    assert main(["bench", "search", "--table", str(path), *argv]) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1


@pytest.mark.timeout(600)
@pytest.mark.slow  # Tune's own controller on a local Ray
def test_the_loop_stops_the_same_trials_at_the_same_epochs_as_tune(tmp_path: Path) -> None:
    import ray

    from study.bench.replay import replay_with_tune, strategy_parts

    # Twelve configurations whose curves cross, so ASHA's rungs matter.
    rng = np.random.default_rng(0)
    rows = [
        {
            "method": "ew",
            "optim/lr": float(lr),
            "optim/weight_decay": float(wd),
            "seed": 0,
            "epoch": epoch,
            "delta_m": float(level - 8 / epoch * slope),
        }
        for lr in np.geomspace(3e-4, 1e-2, 4)
        for wd in np.geomspace(1e-6, 1e-2, 3)
        for level, slope in [rng.normal(size=2)]
        for epoch in range(1, 7)
    ]
    table = TableCurves.from_frame(pd.DataFrame(rows))
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        for seed in (0, 1):
            parts = strategy_parts(table, "tpe+asha", seed, startup_trials=3)
            loop = replay(table, *parts, budget=10 * 6, concurrency=1, max_trials=10)
            parts = strategy_parts(table, "tpe+asha", seed, startup_trials=3)
            tuned = replay_with_tune(table, *parts, trials=10, storage=tmp_path / f"s{seed}")
            assert tuned.trials == loop.trials
            assert tuned.stops() == loop.stops()
            assert tuned.finals == loop.finals
            assert min(loop.stops().values()) < 6  # ASHA stopped something
    finally:
        ray.shutdown()


def test_the_anytime_figure_shows_its_whole_title() -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from study.analysis import draw_anytime

    data = pd.DataFrame(
        {
            "strategy": ["random"] * 3,
            "trial_epochs": [1, 2, 3],
            "median": [1.0, 2.0, 3.0],
            "q25": [0.5, 1.5, 2.5],
            "q75": [1.5, 2.5, 3.5],
        }
    )
    figure = draw_anytime(data, target=2.5)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    title = figure._suptitle.get_window_extent(canvas.get_renderer())
    assert 0 <= title.x0 and title.x1 <= figure.bbox.x1
