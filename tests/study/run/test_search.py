"""The study's searcher on a real in-memory Optuna study: repeats share one configuration
and one Optuna trial, which is told their mean; constraints and warm starts reach Optuna."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest

from search_spaces import load_space
from study.run import StudySearch, mean_result, tpe_sampler
from study.spec import ConstraintSpec


def _search(repeats: int, metric, mode, **kwargs) -> StudySearch:
    space = load_space("default").restricted_to(["ew", "dwa"])
    return StudySearch(
        repeats=repeats,
        space=space.define_by_run(),
        metric=metric,
        mode=mode,
        sampler=optuna.samplers.RandomSampler(seed=3),
        **kwargs,
    )


def test_repeats_share_a_configuration_and_are_numbered() -> None:
    search = _search(3, "delta_m", "max")
    configs = [search.suggest(f"t{i}") for i in range(6)]
    assert [c["repeat"] for c in configs] == [0, 1, 2, 0, 1, 2]
    assert [c["config_id"] for c in configs] == ["t0"] * 3 + ["t3"] * 3
    strip = [{k: v for k, v in c.items() if k != "repeat"} for c in configs]
    assert strip[0] == strip[1] == strip[2]
    assert strip[3] == strip[4] == strip[5]
    assert strip[0] != strip[3]


def test_optuna_is_told_the_mean_once_every_repeat_ended() -> None:
    search = _search(2, ["delta_m", "gflops"], ["max", "min"])
    for i in range(4):
        search.suggest(f"t{i}")
    search.on_trial_complete("t0", {"delta_m": 1.0, "gflops": 2.0})
    study = search._ot_study
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.RUNNING] * 2
    search.on_trial_complete("t1", {"delta_m": 3.0, "gflops": 2.0})
    search.on_trial_complete("t2", None, error=True)
    search.on_trial_complete("t3", {"delta_m": -1.0, "gflops": 4.0})
    first, second = study.trials
    assert first.values == [2.0, 2.0]
    # A failed repeat does not count; the configuration is its other seed's.
    assert second.values == [-1.0, 4.0]


@pytest.mark.parametrize("stopped", [False, True], ids=["completed", "stopped early"])
def test_repeats_give_optuna_each_epochs_mean(stopped: bool) -> None:
    """One Optuna trial per configuration: each step's value is the mean over the repeats
    that reached it (at step 3 the one left, when the scheduler stopped the other)."""
    search = _search(2, "delta_m", "max", epochs=3)
    search.suggest("a")
    search.suggest("b")
    for step, (a, b) in enumerate([(1.0, 3.0), (2.0, 6.0)], start=1):
        search.on_trial_result("a", {"delta_m": a, "training_iteration": step, "epoch": step})
        search.on_trial_result("b", {"delta_m": b, "training_iteration": step, "epoch": step})
    assert search._ot_study.trials[0].intermediate_values == {}  # told with the result
    if stopped:  # Tune hands the last result, already reported, to on_trial_complete
        search.on_trial_complete("a", {"delta_m": 2.0, "training_iteration": 2, "epoch": 2})
    else:
        search.on_trial_result("a", {"delta_m": math.nan, "training_iteration": 3, "epoch": 3})
        search.on_trial_complete("a", {"delta_m": 4.0, "training_iteration": 3, "epoch": 3})
    search.on_trial_complete("b", {"delta_m": 8.0, "training_iteration": 3, "epoch": 3})
    (trial,) = search._ot_study.trials
    assert trial.intermediate_values == {1: 2.0, 2: 4.0, 3: 8.0 if stopped else 6.0}
    if stopped:
        assert trial.state == optuna.trial.TrialState.PRUNED
    else:
        assert (trial.state, trial.value) == (optuna.trial.TrialState.COMPLETE, 6.0)


def test_every_repeat_failing_fails_the_configuration() -> None:
    search = _search(2, "delta_m", "max")
    search.suggest("a")
    search.suggest("b")
    search.on_trial_complete("a", None, error=True)
    search.on_trial_complete("b", None, error=True)
    assert search._ot_study.trials[0].state == optuna.trial.TrialState.FAIL


def test_constraints_reach_optuna_as_violations_of_the_mean() -> None:
    caps = (ConstraintSpec(metric="gflops", max=1.5), ConstraintSpec(metric="params", min=10))
    search = _search(1, "delta_m", "max", constraints=caps)
    search.suggest("a")
    search.on_trial_complete("a", {"delta_m": 0.5, "gflops": 2.0, "params": 30})
    trial = search._ot_study.trials[0]
    assert trial.constraints == {"gflops <= 1.5": 0.5, "10 <= params": -20.0}


def test_warm_start_points_come_first_and_are_repeated() -> None:
    space = load_space("default").restricted_to(["ew", "dwa"])
    points = space.default_points()
    search = _search(2, "delta_m", "max", points_to_evaluate=points)
    configs = [search.suggest(f"t{i}") for i in range(4)]
    for config, point in zip(configs, [points[0], points[0], points[1], points[1]], strict=True):
        assert config["method"] == point["method"]
        assert config["optim"]["lr"] == point["optim/lr"]


@pytest.mark.parametrize(
    ("results", "expected"),
    [
        ([{"a": 1.0}, {"a": 3.0}], {"a": 2.0}),
        ([{"a": 1.0}, None, {"a": math.nan}], {"a": 1.0}),
        ([None, {"b": 1.0}], None),
    ],
)
def test_mean_result(results, expected) -> None:
    assert mean_result(results, ["a"]) == expected


def test_a_resuming_driver_rebinds_the_searcher_to_its_own_journal(tmp_path, monkeypatch) -> None:
    import shutil

    from study import store
    from study.run import journal_storage

    monkeypatch.setattr("study.store._remote._DRIVERS", {})
    first = tmp_path / "first"
    journal = journal_storage(first, "s")
    search = _search(1, "delta_m", "max", study_name="multi_task", study="s", storage=journal)
    search.suggest("a")
    search.suggest("b")
    search.on_trial_complete("a", {"delta_m": 1.0})
    search.save(str(tmp_path / "searcher.pkl"))

    # Another machine: the same store, pulled into a mirror somewhere else.
    second = tmp_path / "second"
    shutil.copytree(first, second)
    store.bind_driver("s", store.DriverStore(second))
    restored = _search(1, "delta_m", "max", study_name="multi_task", study="s", storage=journal)
    restored.restore(str(tmp_path / "searcher.pkl"))
    restored.on_trial_complete("b", {"delta_m": 2.0})

    def values(root):
        study = optuna.load_study(study_name="multi_task", storage=journal_storage(root, "s"))
        return [t.values for t in study.trials]

    assert values(second) == [[1.0], [2.0]]
    assert values(first) == [[1.0], None]  # the first driver's journal is left alone


def test_a_uri_root_gets_the_journal_when_optuna_asks_and_is_told(monkeypatch) -> None:
    from study import store

    pushes: list[int] = []
    monkeypatch.setattr("study.store._remote._DRIVERS", {})
    store.bind_driver("s", store.DriverStore(Path("."), lambda: pushes.append(1)))
    search = _search(2, "delta_m", "max", study="s")
    search.suggest("a")
    search.suggest("b")  # a repeat: Optuna asked nothing new
    assert len(pushes) == 1
    search.on_trial_complete("a", {"delta_m": 1.0})
    assert len(pushes) == 1  # not told yet: one repeat is still running
    search.on_trial_complete("b", {"delta_m": 2.0})
    assert len(pushes) == 2


def _draws(sampler: optuna.samplers.BaseSampler, n: int) -> list[dict]:
    study = optuna.create_study(sampler=sampler, direction="maximize")
    # The best value sits at x = 1: TPE, once it models, samples near it.
    study.optimize(lambda t: -((t.suggest_float("x", -10.0, 10.0) - 1.0) ** 2), n_trials=n)
    return [t.params for t in study.trials]


@pytest.mark.parametrize("multivariate", [False, True])
def test_tpe_starts_with_random_search_draws_then_models(multivariate: bool) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tpe = _draws(tpe_sampler(7, 4, multivariate=multivariate, constant_liar=True), 30)
    rand = _draws(optuna.samplers.RandomSampler(seed=7), 30)
    # The start-up trials are random search's own draws, seed for seed; then TPE's differ.
    assert tpe[:4] == rand[:4] and tpe[4] != rand[4]
    near = sum(abs(p["x"] - 1.0) < 1.0 for p in tpe[4:])
    assert near > sum(abs(p["x"] - 1.0) < 1.0 for p in rand[4:])
