"""Hyperparameter importance from the Optuna journal: Optuna's own numbers, or one clear
message (and a plot that says so) when there are too few trials."""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from study.analysis import (
    MIN_TRIALS,
    RELIABLE_TRIALS,
    NotEnoughTrials,
    importance_data,
    load_results,
    make_plot,
)


def test_importance_is_optunas_ped_anova_of_each_study_with_enough_trials(store: Path) -> None:
    dirs = sorted(p for p in store.iterdir() if p.is_dir())
    before = {p: p.read_bytes() for p in store.glob("*/optuna.journal")}
    data = importance_data(dirs)
    # Only hard_sharing-seed0's journal has enough trials (8); rcm_resnet-seed0's has 2.
    assert set(data["study"]) == {"hard_sharing-seed0"}
    assert set(data["optuna_study"]) == {"multi_task"} and set(data["trials"]) == {8}
    storage = JournalStorage(JournalFileBackend(str(store / "hard_sharing-seed0/optuna.journal")))
    study = optuna.load_study(study_name="multi_task", storage=storage)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = optuna.importance.get_param_importances(study)
    assert dict(zip(data["param"], data["importance"], strict=True)) == pytest.approx(want)
    assert sum(data["importance"]) == pytest.approx(1.0)
    # Conditional parameters count too (PED-ANOVA, Optuna's default evaluator).
    assert {"dwa/temperature", "amtl/margin", "optim/lr", "method"} <= set(data["param"])
    # Reading leaves the journals as they were.
    assert {p: p.read_bytes() for p in store.glob("*/optuna.journal")} == before


def test_too_few_trials_is_one_message_and_a_plot_that_says_so(store: Path, tmp_path: Path) -> None:
    root = tmp_path / "results"
    shutil.copytree(store / "rcm_resnet-seed0", root / "rcm_resnet-seed0")  # 2 Optuna trials
    with pytest.raises(NotEnoughTrials) as err:
        importance_data([root / "rcm_resnet-seed0"])
    message = str(err.value)
    assert "\n" not in message
    assert (
        "not enough trials" in message and "(2 completed)" in message and f"{MIN_TRIALS}" in message
    )
    plot = make_plot("importance", load_results(root))
    assert plot.data is None and plot.note == message
    texts = [t.get_text() for ax in plot.figure.axes for t in ax.texts]
    titles = [ax.get_title() for ax in plot.figure.axes]
    assert any("not enough trials" in t for t in texts + titles)


def test_no_journal_is_a_message_too(store: Path, tmp_path: Path) -> None:
    root = tmp_path / "results"
    shutil.copytree(store / "hard_sharing-seed1", root / "hard_sharing-seed1")
    with pytest.raises(NotEnoughTrials, match="no Optuna journal"):
        importance_data([root / "hard_sharing-seed1"])
    plot = make_plot("importance", load_results(root))
    assert plot.data is None and "no Optuna journal" in (plot.note or "")


def test_a_named_optuna_study_and_a_lower_minimum(
    tmp_path: Path, journal: Callable[[Path, int, int], None]
) -> None:
    journal(tmp_path / "s" / "optuna.journal", 3, 5)
    with pytest.raises(NotEnoughTrials, match="no Optuna study named 'stage-x'"):
        importance_data([tmp_path / "s"], study_name="stage-x")
    data = importance_data([tmp_path / "s"], study_name="multi_task", min_trials=3)
    assert set(data["trials"]) == {3} and len(data) > 0


@pytest.mark.parametrize("trials", [RELIABLE_TRIALS - 1, RELIABLE_TRIALS])
def test_few_trials_draw_a_caution_and_no_numbers(
    store: Path, tmp_path: Path, journal: Callable[[Path, int, int], None], trials: int
) -> None:
    """Under RELIABLE_TRIALS the bars keep their order but lose their values; from it on,
    each bar is labelled with its importance and there is no caution."""
    root = tmp_path / "results"
    shutil.copytree(store / "hard_sharing-seed1", root / "hard_sharing-seed1")
    journal(root / "hard_sharing-seed1" / "optuna.journal", trials, 3)
    plot = make_plot("importance", load_results(root))
    assert plot.data is not None and set(plot.data["trials"]) == {trials}
    (ax,) = plot.figure.axes
    cautions = [t for t in ax.texts if t.get_gid() == "caution"]
    numbers = [t.get_text().strip() for t in ax.texts if t.get_gid() != "caution"]
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    want = plot.data.sort_values("importance", ascending=False)["importance"]
    assert [p.get_width() for p in ax.patches] == pytest.approx(list(want))
    if trials < RELIABLE_TRIALS:
        (caution,) = cautions
        assert f"only {trials} completed trials" in caution.get_text()
        assert numbers == [] and not any(any(c.isdigit() for c in t) for t in ticks)
    else:
        assert cautions == []
        assert numbers == [f"{v:.3f}" for v in want]
