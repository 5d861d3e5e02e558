"""The searcher on each of Optuna's storages the spec offers: the study's journal file, a
real PostgreSQL and a real Redis server (both asking for a password the environment
gives). Repeats, several objectives with constraints, warm starts, the store's names on
Optuna's trials and a resumed driver behave the same on each; a database that cannot be
reached is one line."""

from __future__ import annotations

import uuid
from pathlib import Path

import optuna
import pytest

from search_spaces import load_space
from study import store
from study.run import StorageUnreachable, StudySearch, optuna_study_name, search_storage
from study.spec import ConstraintSpec

STORAGES = ["journal", "postgresql", "redis"]


@pytest.fixture(params=STORAGES)
def storage(request: pytest.FixtureRequest) -> str:
    """The spec's ``search_storage`` of each kind, its server running."""
    if request.param == "journal":
        return "journal"
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def study() -> str:
    # A database outlives a test: each test's study is its own.
    return f"s-{uuid.uuid4().hex[:8]}"


def _search(root: Path, where: str, study: str, repeats: int = 1, **kwargs) -> StudySearch:
    space = load_space("default").restricted_to(["ew", "dwa"])
    return StudySearch(
        repeats=repeats,
        space=space.define_by_run(),
        sampler=optuna.samplers.RandomSampler(seed=3),
        study_name=optuna_study_name(where, study, "multi_task"),
        storage=search_storage(root, study, where),
        study=study,
        search_storage=where,
        **kwargs,
    )


def _told(root: Path, where: str, study: str) -> list[optuna.trial.FrozenTrial]:
    """The Optuna trials as a new connection reads them back."""
    name = optuna_study_name(where, study, "multi_task")
    return optuna.load_study(study_name=name, storage=search_storage(root, study, where)).trials


def test_repeats_objectives_and_constraints_reach_each_storage(
    tmp_path: Path, storage: str, study: str
) -> None:
    caps = (ConstraintSpec(metric="params", max=20),)
    search = _search(
        tmp_path, storage, study, 2, metric=["delta_m", "gflops"], mode=["max", "min"],
        constraints=caps,
    )  # fmt: skip
    configs = [search.suggest(f"t{i}") for i in range(4)]
    assert [c["repeat"] for c in configs] == [0, 1, 0, 1]
    search.on_trial_complete("t0", {"delta_m": 1.0, "gflops": 2.0, "params": 10})
    search.on_trial_complete("t1", {"delta_m": 3.0, "gflops": 2.0, "params": 10})
    search.on_trial_complete("t2", None, error=True)
    search.on_trial_complete("t3", {"delta_m": -1.0, "gflops": 4.0, "params": 30})
    first, second = _told(tmp_path, storage, study)
    assert first.values == [2.0, 2.0] and second.values == [-1.0, 4.0]
    assert first.constraints == {"params <= 20": -10.0}
    assert second.constraints == {"params <= 20": 10.0}
    # The store's names for each configuration, to read Optuna and the store together.
    assert first.user_attrs == {"config_id": "t0", "trial_ids": ["t0", "t1"]}
    assert second.user_attrs == {"config_id": "t2", "trial_ids": ["t2", "t3"]}


def test_warm_start_points_come_first_on_each_storage(
    tmp_path: Path, storage: str, study: str
) -> None:
    points = load_space("default").restricted_to(["ew", "dwa"]).default_points()
    search = _search(
        tmp_path, storage, study, 1, metric="delta_m", mode="max", points_to_evaluate=points
    )
    configs = [search.suggest(f"t{i}") for i in range(2)]
    assert [c["method"] for c in configs] == [p["method"] for p in points]
    for i in range(2):
        search.on_trial_complete(f"t{i}", {"delta_m": float(i)})
    told = _told(tmp_path, storage, study)
    assert [t.params["method"] for t in told] == [p["method"] for p in points]
    assert [t.values for t in told] == [[0.0], [1.0]]


def test_a_resumed_driver_goes_on_in_the_same_storage(
    tmp_path: Path, storage: str, study: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("study.store._remote._DRIVERS", {})
    first = tmp_path / "first"
    store.bind_driver(study, store.DriverStore(first))
    search = _search(first, storage, study, 1, metric="delta_m", mode="max")
    search.suggest("a")
    search.suggest("b")
    search.on_trial_complete("a", {"delta_m": 1.0})
    search.save(str(tmp_path / "searcher.pkl"))

    # Another driver with a mirror of the store elsewhere (a journal file is copied;
    # a database is the same one).
    second = tmp_path / "second"
    if storage == "journal":
        import shutil

        shutil.copytree(first, second)
    store.bind_driver(study, store.DriverStore(second))
    restored = _search(second, storage, study, 1, metric="delta_m", mode="max")
    restored.restore(str(tmp_path / "searcher.pkl"))
    restored.on_trial_complete("b", {"delta_m": 2.0})
    assert restored.suggest("c")["config_id"] == "c"
    told = _told(second, storage, study)
    assert [t.values for t in told[:2]] == [[1.0], [2.0]]
    assert [t.user_attrs["config_id"] for t in told] == ["a", "b", "c"]


def test_studies_in_one_database_are_kept_apart(tmp_path: Path, postgresql_or_redis: str) -> None:
    where = postgresql_or_redis
    names = [f"a-{uuid.uuid4().hex[:8]}", f"b-{uuid.uuid4().hex[:8]}"]
    for value, name in enumerate(names):
        search = _search(tmp_path, where, name, 1, metric="delta_m", mode="max")
        search.suggest("t0")
        search.on_trial_complete("t0", {"delta_m": float(value)})
    assert [[t.values for t in _told(tmp_path, where, n)] for n in names] == [[[0.0]], [[1.0]]]


@pytest.fixture(params=["postgresql", "redis"])
def postgresql_or_redis(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue(f"{request.param}_url")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    "scheme", ["postgresql://u@127.0.0.1:{port}/db", "redis://127.0.0.1:{port}/0"]
)
def test_an_unreachable_database_is_one_line(tmp_path: Path, scheme: str) -> None:
    url = scheme.format(port=_free_port())
    with pytest.raises(StorageUnreachable) as caught:
        search_storage(tmp_path, "s", url)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"search_storage: cannot open {url}: ")


@pytest.mark.parametrize("kind", ["postgresql", "redis"])
def test_a_wrong_password_is_one_line_that_does_not_show_it(
    tmp_path: Path, kind: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    from study.spec import REDIS_PASSWORD_ENV

    url = request.getfixturevalue(f"{kind}_url")
    monkeypatch.setenv("PGPASSWORD" if kind == "postgresql" else REDIS_PASSWORD_ENV, "wrong-pw")
    with pytest.raises(StorageUnreachable) as caught:
        search_storage(tmp_path, "s", url)
    message = str(caught.value)
    assert "\n" not in message and "wrong-pw" not in message
    assert "PGPASSWORD" in message and REDIS_PASSWORD_ENV in message
