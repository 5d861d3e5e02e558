"""Hyperparameter importance from the Optuna journal: Optuna's own numbers, or one clear
message (and a plot that says so) when there are too few trials."""

from __future__ import annotations

import shutil
import uuid
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


# ---------------------------------------------------------------------------- databases


def _search_in(root: Path, study: str, url: str, values: list[float]) -> None:
    """Configurations proposed and told through the driver's searcher, into ``url``."""
    from search_spaces import load_space
    from study.run import StudySearch, optuna_study_name, search_storage

    search = StudySearch(
        space=load_space("default").restricted_to(["ew", "dwa"]).define_by_run(),
        sampler=optuna.samplers.RandomSampler(seed=3),
        study_name=optuna_study_name(url, study, "multi_task"),
        storage=search_storage(root, study, url),
        study=study,
        search_storage=url,
        metric="delta_m",
        mode="max",
    )
    for i, value in enumerate(values):
        search.suggest(f"t{i}")
        search.on_trial_complete(f"t{i}", {"delta_m": value})


@pytest.fixture(params=["postgresql", "redis"])
def database(request: pytest.FixtureRequest) -> str:
    """A real server's URL, its password in the environment as the driver reads it."""
    return request.getfixturevalue(f"{request.param}_url")


def test_importance_reads_the_database_the_spec_names(tmp_path: Path, database: str) -> None:
    from study import store
    from study.optuna_storage import optuna_study_name, search_storage

    root = tmp_path / "results"
    ours, other = (f"{name}-{uuid.uuid4().hex[:8]}" for name in ("ours", "other"))
    for study, values in ((ours, [1.0, -2.0, 0.5, 3.0, -1.0]), (other, [0.0, 1.0])):
        store.write_spec(root, study, f"name: {study}\nsearch_storage: {database}\n")
        _search_in(root, study, database, values)
    assert not list(root.glob("*/optuna.journal"))  # nothing of it is in the store
    data = importance_data([root / ours])
    # Only this study's phase, under its phase's name; the other study in the same
    # database (2 trials) is neither read nor reported as skipped.
    assert set(data["study"]) == {ours} and set(data["optuna_study"]) == {"multi_task"}
    assert set(data["trials"]) == {5} and "skipped" not in data.attrs
    study = optuna.load_study(
        study_name=optuna_study_name(database, ours, "multi_task"),
        storage=search_storage(root, ours, database),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = optuna.importance.get_param_importances(study)
    assert dict(zip(data["param"], data["importance"], strict=True)) == pytest.approx(want)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _unreachable_study(store_root: Path, tmp_path: Path) -> tuple[Path, str]:
    root = tmp_path / "results"
    shutil.copytree(store_root / "hard_sharing-seed1", root / "hard_sharing-seed1")
    url = f"postgresql://u@127.0.0.1:{_free_port()}/db"
    (root / "hard_sharing-seed1" / "spec.yaml").write_text(f"search_storage: {url}\n")
    return root, url


def test_a_database_out_of_reach_is_one_line_and_a_plot_that_says_so(
    store: Path, tmp_path: Path
) -> None:
    root, url = _unreachable_study(store, tmp_path)
    with pytest.raises(NotEnoughTrials) as err:
        importance_data([root / "hard_sharing-seed1"])
    message = str(err.value)
    assert "\n" not in message and err.value.unreachable
    assert message.startswith(f"importance: search_storage: cannot open {url}: ")
    plot = make_plot("importance", load_results(root))
    assert plot.data is None and plot.note == message
    titles = [ax.get_title() for ax in plot.figure.axes]
    texts = [t.get_text() for ax in plot.figure.axes for t in ax.texts]
    assert any("cannot be reached" in t for t in titles + texts)


@pytest.mark.slow
def test_the_report_of_a_study_whose_database_is_out_of_reach(store: Path, tmp_path: Path) -> None:
    from study.analysis import write_report

    root, url = _unreachable_study(store, tmp_path)
    text = write_report(root, tmp_path / "report.html").read_text(encoding="utf-8")
    section = text[text.index('id="plot-importance"') :]
    assert f"cannot open {url}" in section[: section.index("</figure>")]
