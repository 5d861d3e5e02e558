"""A study whose driver is killed mid-way resumes: every trial ends in the store once,
with the results in a folder or in an S3 bucket (resumed from another machine's cache)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from study.run import journal_storage
from study.store import load_history, load_trials, readable

SPEC = """
name: resumed
seed: 3
dataset: {{image_size: 32, train_samples: 128, val_samples: 8}}
tasks: [semseg, depth]
model: {{backbone: regnetx_002}}
methods: [ew, dwa]
trials: 4
concurrency: 1
epochs: 4
batch_size: 8
scheduler: {{name: fifo}}
baselines: none
results: {results}
"""


def _rows(study: str) -> list[dict]:
    try:
        return load_trials(readable(study)).to_dict("records")
    except (FileNotFoundError, ValueError):
        return []


def _run(spec: Path, cache: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "study.cli", "run", str(spec), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own group: the kill takes its local Ray with it
        env={**os.environ, "MTLSTUDY_CACHE": str(cache)},
    )


@pytest.mark.slow
@pytest.mark.parametrize("store", ["folder", "s3"])
def test_killed_driver_resumes_with_each_trial_once(
    tmp_path: Path, store: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    if store == "s3":
        results = f"{request.getfixturevalue('s3_bucket')}/resume-{tmp_path.name}"
    else:
        results = str(tmp_path / "results")
    monkeypatch.setenv("MTLSTUDY_CACHE", str(tmp_path / "reader"))
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.format(results=results))
    study = f"{results}/resumed"
    driver = _run(spec, tmp_path / "first")
    deadline = time.monotonic() + 300
    # Kill once one trial has finished and the next has reported two epochs: Tune's
    # experiment state, which a resume starts from, takes in a trial's checkpoint up to a
    # snapshot (about a second) after the report the store already has.
    while time.monotonic() < deadline:
        rows = _rows(study)
        if any(r["status"] == "completed" for r in rows) and any(
            r["status"] == "running" and r["epochs"] >= 2 for r in rows
        ):
            break
        assert driver.poll() is None, driver.stdout.read()
        time.sleep(0.2)
    else:
        pytest.fail("the study never got half-way")
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    before = {r["trial_id"]: r for r in _rows(study)}
    interrupted = [t for t, r in before.items() if r["status"] == "running"]
    assert interrupted

    resumed = _run(spec, tmp_path / "second", "--resume")  # another machine's mirror
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out

    trials = load_trials(readable(study))
    assert len(trials) == 4 and trials["trial_id"].is_unique, trials[["trial_id", "status"]]
    assert set(trials["status"]) == {"completed"}
    assert set(before) <= set(trials["trial_id"])
    history = load_history(readable(study))
    for trial_id in trials["trial_id"]:
        rows = history[(history["trial_id"] == trial_id) & (history["metric"] == "loss")]
        epochs = rows[(rows["split"] == "val") & (rows["task"] == "all")]["epoch"]
        assert sorted(epochs) == [1, 2, 3, 4], trial_id
    # Optuna was told each configuration once, in the journal the store holds.
    journal = journal_storage(readable(results), "resumed")
    told = optuna.load_study(study_name="multi_task", storage=journal).trials
    assert [t.state for t in told].count(optuna.trial.TrialState.COMPLETE) == 4
    # The interrupted trial went on from its checkpoint, not from epoch 0.
    by_id = trials.set_index("trial_id")
    for trial_id in interrupted:
        assert 1 <= by_id.loc[trial_id, "restored_from_epoch"] <= before[trial_id]["epochs"]
    assert (by_id.drop(index=interrupted)["restored_from_epoch"] == 0).all()
