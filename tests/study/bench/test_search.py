"""The search bench: its figures from hand-made report sequences, a tiny real run that
keeps to its budget with every strategy, and one-line errors for bad arguments."""

import math

import optuna
import pytest

from study.bench.search import (
    STRATEGIES,
    format_table,
    measure_search,
    reach,
    summarise,
    threshold,
)
from study.cli import main


def test_threshold_is_the_best_within_the_budget_less_the_margin() -> None:
    runs = [[(1, 2.0), (2, 3.5)], [(1, 1.0), (2, math.nan), (3, 9.0)]]
    # 9.0 came after a budget of 2 trial-epochs; NaN is never a best.
    assert threshold(runs, budget=2) == 2.5
    assert threshold(runs, budget=3, margin=0.5) == 8.5
    with pytest.raises(ValueError, match="no search reported"):
        threshold([[(1, math.nan)], []], budget=5)


def test_reach_is_the_first_report_at_or_above_the_threshold() -> None:
    reports = [(1, 0.0), (2, 2.5), (3, 3.5), (4, 1.0)]
    assert reach(reports, 2.5, budget=4).epochs == 2  # a tie counts as reached
    assert reach(reports, 3.0, budget=4).epochs == 3
    assert reach(reports, 3.0, budget=4).best == 3.5
    missed = reach(reports, 3.0, budget=2)  # reached only after the budget
    assert missed.epochs is None and missed.best == 2.5
    nothing = reach([], 0.0, budget=4)
    assert nothing.epochs is None and math.isnan(nothing.best)


def test_summary_medians_counts_and_ratio() -> None:
    runs = {
        # best of all: 4.0 at 3 trial-epochs, so the threshold is 3.0
        "tpe+asha": [[(1, 1.0), (2, 3.0)], [(1, 0.0), (2, 0.5), (3, 4.0)], [(1, 3.2)]],
        "tpe": [[(1, 0.0), (2, 0.0), (3, 0.0), (4, 3.0)], [(1, 2.0)], [(1, 2.9)]],
        "random": [[(1, 0.0)] * 5 + [(6, 3.1)], [(1, 0.0), (2, 0.0), (3, 3.0)], [(9, 3.0)]],
    }
    summary = summarise(runs, budget=8)
    assert summary["threshold"] == 3.0 and summary["best_delta_m"] == 4.0
    asha, tpe, rand = (summary["strategies"][s] for s in ("tpe+asha", "tpe", "random"))
    assert asha["epochs_to_threshold"] == [2, 3, 1] and asha["median_epochs"] == 2
    assert (asha["min_epochs"], asha["max_epochs"], asha["reached"]) == (1, 3, 3)
    # One of three reached: the median seed is beyond the budget.
    assert tpe["reached"] == 1 and tpe["median_epochs"] is None
    assert tpe["median_best_delta_m"] == 2.9
    # The third random search reached 3.0 only after the budget of 8.
    assert rand["epochs_to_threshold"] == [6, 3, None] and rand["median_epochs"] == 6
    assert summary["ratio"] == {"value": 2 / 6, "upper": None, "lower": None, "met": True}

    slow = summarise({"tpe+asha": [[(4, 5.0)]], "random": [[(1, 0.0)]]}, budget=8)
    # Random never reached 4.0, so the ratio is below 4/8, which does not settle 1/3.
    assert slow["ratio"] == {"value": None, "upper": 0.5, "lower": None, "met": None}
    fast = summarise({"tpe+asha": [[(2, 5.0)]], "random": [[(1, 0.0)]]}, budget=8)
    # Below 2/8: within the third whatever random's true trial-epochs are.
    assert fast["ratio"] == {"value": None, "upper": 0.25, "lower": None, "met": True}
    late = summarise({"tpe+asha": [[(1, 0.0)]], "random": [[(4, 5.0)]]}, budget=8)
    # TPE+ASHA's median is beyond 8, so the ratio is above 8/4: missed.
    assert late["ratio"] == {"value": None, "upper": None, "lower": 2.0, "met": False}
    neither = summarise({"tpe+asha": [[(1, 0.0)]], "random": [[(1, 0.0)], [(1, 5.0)]]}, budget=1)
    # A median over two seeds, one not reached, is beyond the budget for both strategies.
    assert neither["ratio"] == {"value": None, "upper": None, "lower": None, "met": None}
    assert summarise({"random": [[(1, 1.0)]]}, budget=1)["ratio"] is None


def _figures(runs: dict, budget: int) -> dict:
    """What measure_search returns, around hand-made reports (for the table alone)."""
    searches = [
        {"strategy": name, "trials": 1, "wall_s": 1.0, "errors": 0, "reports": reports}
        for name, seeds in runs.items()
        for reports in seeds
    ]
    settings = {
        "image_size": 32,
        "train_samples": 16,
        "val_samples": 8,
        "tasks": ["semseg"],
        "methods": ["ew"],
        "epochs": 2,
        "concurrency": 2,
        "seeds": 2,
        "budget": budget,
    }
    return {
        "machine": "m",
        "date": "d",
        "load_average": {"before": 0.0, "after": 0.0},
        "settings": settings,
        "searches": searches,
        "summary": summarise(runs, budget),
        "wall_s": 1.0,
    }


def test_table_states_bounds_and_every_seed() -> None:
    runs = {
        "tpe+asha": [[(2, 5.0)], [(1, 4.5)]],
        "tpe": [[(1, 0.0)], [(6, 4.0)]],
        "random": [[(1, 1.0)], [(3, 4.2)]],
    }
    table = format_table(_figures(runs, budget=8))
    rows = {line.split()[0]: line for line in table.splitlines()}
    # Each seed's trial-epochs to the threshold (4.0) and best Δm; – where not reached.
    assert rows["tpe+asha"].endswith("2 (+5.00), 1 (+4.50)")
    assert rows["tpe"].endswith("– (+0.00), 6 (+4.00)")
    assert rows["random"].endswith("– (+1.00), 3 (+4.20)")
    # Random's median (over a seed beyond the budget) is beyond it: a bound, 1.5 / 8.
    assert "< 0.19 (random's median is beyond the budget of 8); target ≤ 1/3: met" in table
    runs["tpe+asha"] = [[(1, 0.0)], [(1, 0.0)]]
    runs["random"] = [[(1, 5.0)], [(3, 5.0)]]
    table = format_table(_figures(runs, budget=8))
    assert "> 4.00 (TPE+ASHA's median is beyond the budget of 8); target ≤ 1/3: missed" in table


@pytest.mark.timeout(300)
@pytest.mark.slow  # a search per strategy on a local Ray
def test_every_strategy_runs_within_its_budget(tmp_path) -> None:
    budget, concurrency = 5, 2  # odd: the budget ends inside a trial
    figures = measure_search(
        seeds=1,
        budget=budget,
        epochs=2,
        results=tmp_path / "results",
        train_samples=16,
        image_size=32,
        concurrency=concurrency,
        tasks=("semseg", "depth"),
        methods=("ew", "dwa"),
        log=lambda line: None,
    )
    searches = figures["searches"]
    assert [s["strategy"] for s in searches] == list(STRATEGIES)
    for search in searches:
        epochs = [e for e, _ in search["reports"]]
        assert epochs == list(range(1, len(epochs) + 1))
        # Tune checks the stopper after every report, so a search ends at its budget;
        # at worst each other running trial has one more report on its way.
        assert budget <= search["trial_epochs"] <= budget + concurrency - 1
        assert search["trials"] >= 1 and search["errors"] == 0
        assert all(math.isfinite(d) for _, d in search["reports"])
        # Every report names its trial, numbered in first-report order, with its config.
        trials = search["report_trials"]
        assert len(trials) == len(epochs) and len(search["configs"]) == search["trials"]
        assert sorted(set(trials)) == list(range(search["trials"]))
        assert [trials.index(i) for i in range(search["trials"])] == sorted(
            trials.index(i) for i in range(search["trials"])
        )
        assert all(config["method"] in ("ew", "dwa") for config in search["configs"])
    summary = figures["summary"]
    assert set(summary["strategies"]) == set(STRATEGIES)
    assert max(s["reached"] for s in summary["strategies"].values()) >= 1
    assert set(figures["references"]) == {"semseg", "depth"}
    table = format_table(figures).splitlines()
    assert [line.split()[0] for line in table[5:8]] == list(STRATEGIES)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--live", "--seeds", "0"], "expected a positive integer, got 0"),
        (["--live", "--budget", "3", "--epochs", "4"], "less than one trial"),
        (["--live", "--image-size", "8"], "expected 16 to 1024"),
        (["--live", "--margin", "0"], "expected a positive number of Δm points"),
        (["--live", "--grace-period", "5", "--epochs", "4"], "expected 1 to the trial's 4"),
        (["--live", "--reduction-factor", "1"], "expected more than 1"),
        (["--live", "--startup-trials", "0"], "expected a positive integer, got 0"),
        (["--live", "--plot", "a.png"], "--plot replay the table; not with --live"),
    ],
)
def test_bad_arguments_are_one_line(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "search", *argv]) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_the_levers_reach_the_tpe_strategies() -> None:
    from study.bench.search import Levers, _optuna_sampler

    tpe = _optuna_sampler("tpe", 7, Levers(startup_trials=4, constant_liar=True))
    assert isinstance(tpe, optuna.samplers.TPESampler)
    assert tpe._n_startup_trials == 4 and tpe._constant_liar and not tpe._multivariate
    random = _optuna_sampler("random", 7, Levers(startup_trials=4, multivariate=True))
    assert isinstance(random, optuna.samplers.RandomSampler)
