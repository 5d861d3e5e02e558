"""A trial under Ray Tune: the function trainable that drives a :class:`TrialRunner`,
reporting once per epoch with a checkpoint, and the resources it asks for."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
from ray import tune

from study.trial import TrialRunner, TrialSetup

__all__ = ["trainable", "trial_function"]


def trainable(setup: TrialSetup) -> Any:
    """What a Tuner runs for each trial of ``setup``'s phase."""
    return tune.with_resources(
        tune.with_parameters(trial_function, setup=setup), {"cpu": setup.spec.cpus_per_trial}
    )


def trial_function(config: dict[str, Any], setup: TrialSetup) -> None:
    """The Ray Tune function trainable: resume if Tune holds a checkpoint, then train."""
    torch.set_num_threads(max(1, int(setup.spec.cpus_per_trial)))
    runner = TrialRunner(setup, config)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            runner.restore(directory)
    while runner.epoch < setup.epochs:
        report = runner.run_epoch()
        if runner.epoch == setup.epochs and setup.models_dir is not None:
            # Before the last report: once Tune has it, the next stage may look for this.
            trial_id = tune.get_context().get_trial_id()
            runner.save_model(Path(setup.models_dir) / f"{trial_id}.pt")
        with tempfile.TemporaryDirectory() as directory:
            runner.save(directory)
            tune.report(report, checkpoint=tune.Checkpoint.from_directory(directory))
