"""A real study whose Optuna history is in PostgreSQL or Redis: Optuna holds one trial per
configuration, named as the store names it, and a resumed driver reopens the database; a
database that cannot be reached stops the study before Ray starts."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import optuna
import pytest

from study.run import StorageUnreachable, run_study, search_storage
from study.spec import load_spec
from study.store import load_trials

SPEC = """
name: {name}
seed: 2
dataset: {{image_size: 32, train_samples: 16, val_samples: 8}}
tasks: [semseg, depth]
model: {{backbone: regnetx_002}}
methods: [ew, dwa]
trials: 2
repeats: 2
concurrency: 2
epochs: 1
batch_size: 8
scheduler: {{name: fifo}}
baselines: none
compact_on_finish: false
search_storage: '{storage}'
results: {results}
"""


def _spec(tmp_path: Path, storage: str):
    path = tmp_path / "spec.yaml"
    name = f"db-{uuid.uuid4().hex[:8]}"  # the database outlives the test
    path.write_text(SPEC.format(name=name, storage=storage, results=tmp_path / "results"))
    return load_spec(path)


@pytest.mark.slow  # a study on a local Ray
@pytest.mark.parametrize("kind", ["postgresql", "redis"])
def test_a_study_keeps_its_search_in_a_database(
    tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    spec, space = _spec(tmp_path, request.getfixturevalue(f"{kind}_url"))
    outcome = run_study(spec, space, log=lambda line: None)
    assert outcome.errors == 0 and outcome.trials == 4
    root = tmp_path / "results"
    assert not (root / spec.name / "optuna.journal").exists()
    trials = load_trials(root / spec.name)
    means = trials.groupby("config_id")["val_loss"].mean()

    def told() -> list[optuna.trial.FrozenTrial]:
        storage = search_storage(root, spec.name, spec.search_storage)
        return optuna.load_study(study_name=f"{spec.name}/multi_task", storage=storage).trials

    done = told()
    assert [t.state for t in done] == [optuna.trial.TrialState.COMPLETE] * 2
    for trial in done:
        ids = trials.loc[trials["config_id"] == trial.user_attrs["config_id"], "trial_id"]
        assert sorted(trial.user_attrs["trial_ids"]) == sorted(ids)
        assert trial.values == pytest.approx([means[trial.user_attrs["config_id"]]])
    # A resumed driver reopens the database and finds the search done: nothing is added.
    run_study(spec, space, log=lambda line: None, resume=True)
    assert [(t.number, t.values) for t in told()] == [(t.number, t.values) for t in done]
    assert len(load_trials(root / spec.name)) == 4


def test_an_unreachable_database_stops_the_study_before_ray(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    spec, space = _spec(tmp_path, f"postgresql://me@127.0.0.1:{port}/studies")
    with pytest.raises(StorageUnreachable, match="^search_storage: cannot open postgresql://"):
        run_study(spec, space, log=lambda line: None)
    assert not (tmp_path / "results" / spec.name / "tune").exists()  # no trial started
