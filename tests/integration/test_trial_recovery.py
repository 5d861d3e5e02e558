"""A trial whose process dies resumes from its last Tune checkpoint, not from scratch."""

import os
import signal
from pathlib import Path
from typing import Any

from ray import tune

from cluster import ray_session
from search_spaces import load_space
from study.run import TrialSetup, trainable
from study.run._phases import _run_config
from study.spec import DatasetSpec, StudySpec
from study.store import load_history, load_trials


class _KillAfterFirstCheckpoint(tune.Callback):
    """Kills the trial's worker process once, as soon as Tune holds its first checkpoint."""

    def __init__(self) -> None:
        self.epochs: list[int] = []
        self.pid = 0
        self.killed_after: int | None = None

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        self.epochs.append(int(result["epoch"]))
        self.pid = int(result["pid"])

    def on_checkpoint(
        self, iteration: int, trials: list, trial: Any, checkpoint: Any, **info: Any
    ) -> None:
        if self.killed_after is None:
            self.killed_after = len(self.epochs)
            os.kill(self.pid, signal.SIGKILL)


def _one_trial(tmp_path: Path, callback: tune.Callback, **fields: Any) -> StudySpec:
    """One ``ew`` trial on depth through Tune, watched by ``callback``; its spec."""
    spec = StudySpec(
        tasks=["depth"],
        dataset=DatasetSpec(image_size=32, train_samples=32, val_samples=16),
        model={"backbone": "regnetx_002"},
        batch_size=16,
        baselines="none",
        results=str(tmp_path),
        **fields,
    )
    setup = TrialSetup(spec=spec, tasks=tuple(spec.tasks))
    run_config = _run_config(spec, tmp_path, "multi_task", setup)
    run_config.callbacks.append(callback)
    config = load_space("default").default_config("ew")
    with ray_session():
        results = tune.Tuner(trainable(setup), param_space=config, run_config=run_config).fit()
    assert results.errors == []
    return spec


def test_killed_trial_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    killer = _KillAfterFirstCheckpoint()
    spec = _one_trial(tmp_path, killer, name="recover", epochs=3, max_failures=1)
    # The next report continues from the checkpointed epoch; a restart would report 1 again.
    assert killer.killed_after is not None
    checkpointed = killer.epochs[killer.killed_after - 1]
    assert killer.epochs[killer.killed_after] == checkpointed + 1
    assert killer.epochs[-1] == 3
    trials = load_trials(tmp_path / spec.name)
    assert list(trials["status"]) == ["completed"] and list(trials["epochs"]) == [3]
    history = load_history(tmp_path / spec.name, where="metric == 'rmse'")
    assert sorted(history["epoch"]) == [1, 2, 3]


class _Checkpoints(tune.Callback):
    def __init__(self) -> None:
        self.epochs: list[int] = []
        self.checkpointed: list[int] = []

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        self.epochs.append(int(result["epoch"]))

    def on_checkpoint(
        self, iteration: int, trials: list, trial: Any, checkpoint: Any, **info: Any
    ) -> None:
        self.checkpointed.append(self.epochs[-1])


def test_a_trial_reports_every_epoch_and_checkpoints_at_its_checkpoint_epochs(
    tmp_path: Path,
) -> None:
    seen = _Checkpoints()
    spec = _one_trial(
        tmp_path, seen, name="sparse", epochs=5, checkpoint_every=2, scheduler={"name": "fifo"}
    )
    assert seen.epochs == [1, 2, 3, 4, 5]
    assert seen.checkpointed == [2, 4, 5]
    history = load_history(tmp_path / spec.name, where="metric == 'rmse'")
    assert sorted(history["epoch"]) == [1, 2, 3, 4, 5]
