"""A trial under Ray Tune: the function trainable that drives a :class:`TrialRunner`,
reporting once per epoch with a checkpoint, and the resources it asks for.

With ``workers_per_trial > 1`` the function trainable launches a Ray Train
``TorchTrainer`` of that many workers (DeepSpeed at that world size) and waits for it;
Ray Train's ``TuneReportCallback`` passes each epoch's report on to Tune. Train keeps
that run's checkpoints under the study's folder, named after the Tune trial, so a
restarted trial's trainer resumes from its last one.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Callable
from typing import Any

import torch
from ray import tune

from study import store
from study.run._trial import TrialRunner, TrialSetup

__all__ = ["CHECKPOINTS_KEPT", "trainable", "trial_function"]

#: Checkpoints a trial keeps on storage, in Tune and in Ray Train alike: the experiment
#: state a resume starts from is synced a little after the newest checkpoint, and may
#: still name the one before it.
CHECKPOINTS_KEPT = 2


def trainable(setup: TrialSetup) -> Any:
    """What a Tuner runs for each trial of ``setup``'s phase. A multi-worker trial's own
    process only waits for its workers, so it asks for no CPU of its own."""
    spec = setup.spec
    function = tune.with_parameters(trial_function, setup=setup)
    if spec.workers_per_trial == 1:
        return tune.with_resources(function, {"cpu": spec.cpus_per_trial})
    # Ray refuses an empty request; a MiB of memory keeps it from holding a worker's CPU.
    return tune.with_resources(function, {"cpu": 0, "memory": 2**20})


def trial_function(config: dict[str, Any], setup: TrialSetup) -> None:
    """The Ray Tune function trainable: resume if Tune holds a checkpoint, then train."""
    if setup.spec.workers_per_trial > 1:
        _train_on_workers(config, setup)
        return
    _train(config, setup, tune.get_checkpoint(), tune.report, tune.get_context().get_trial_id())


def _train(
    config: dict[str, Any],
    setup: TrialSetup,
    checkpoint: Any,
    report: Callable[..., None],
    trial_id: str,
    lead: bool = True,
) -> None:
    """The epochs of one worker (or of the only one): restore, train, report each epoch."""
    torch.set_num_threads(max(1, int(setup.spec.cpus_per_trial)))
    runner = TrialRunner(setup, config)
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            runner.restore(directory)
    while runner.epoch < setup.epochs:
        metrics = runner.run_epoch()
        if runner.epoch == setup.epochs and setup.models_dir is not None and lead:
            # Before the last report: once Tune has it, the next stage may look for this.
            runner.save_model(store.join(setup.models_dir, f"{trial_id}.pt"))
        with tempfile.TemporaryDirectory() as directory:
            runner.save(directory)  # every rank: DeepSpeed writes each rank's part
            report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))


def _train_on_workers(config: dict[str, Any], setup: TrialSetup) -> None:
    from ray import train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    spec = setup.spec
    trial_id = tune.get_context().get_trial_id()
    trainer = TorchTrainer(
        functools.partial(_worker, setup=setup, trial_id=trial_id),
        train_loop_config=config,
        scaling_config=train.ScalingConfig(
            num_workers=spec.workers_per_trial,
            use_gpu=torch.cuda.is_available(),
            resources_per_worker={"CPU": spec.cpus_per_trial},
        ),
        run_config=train.RunConfig(
            name=trial_id,
            storage_path=store.join(store.absolute(spec.results), spec.name, "train"),
            failure_config=train.FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=train.CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT),
            callbacks=[TuneReportCallback()],
        ),
    )
    trainer.fit()


def _worker(config: dict[str, Any], setup: TrialSetup, trial_id: str) -> None:
    from ray import train

    context = train.get_context()
    _train(
        config,
        setup,
        train.get_checkpoint(),
        train.report,
        trial_id,
        lead=context.get_world_rank() == 0,
    )
