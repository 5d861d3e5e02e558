"""TensorBoard event files per trial, with the store's metric names."""

from __future__ import annotations

from typing import Any

from ray.tune.experiment import Trial
from ray.tune.logger import TBXLoggerCallback

from study.run._recorder import history_rows
from study.run._setup import TrialSetup

__all__ = ["TensorBoardLogger"]


class TensorBoardLogger(TBXLoggerCallback):
    """Tune's TensorBoard logger (every reported number under ``ray/tune/...``, one event
    file in each trial's folder), which also writes each epoch's history rows under the
    store's names, ``<split>/<task>/<metric>`` (e.g. ``val/semseg/miou``,
    ``train/depth/weight``, ``val/all/delta_m``), at step = epoch.

    Passing it to the run replaces Tune's default TensorBoard logger, so there is one event
    file per trial, written from the driver as Tune's own is."""

    def __init__(self, setup: TrialSetup) -> None:
        super().__init__()
        self._setup = setup

    def log_trial_result(self, iteration: int, trial: Trial, result: dict[str, Any]) -> None:
        super().log_trial_result(iteration, trial, result)
        writer = self._trial_writer[trial]
        for row in history_rows(result, self._setup.task_records(trial.config)):
            tag = f"{row['split']}/{row['task']}/{row['metric']}"
            writer.add_scalar(tag, row["value"], global_step=row["epoch"])
        writer.flush()
