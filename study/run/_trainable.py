"""A trial under Ray Tune: the function trainable that drives a :class:`TrialRunner`,
reporting once per epoch (with a checkpoint at the phase's checkpoint epochs), and the
resources it asks for: the spec's CPUs and GPUs, from the spec alone (never from what the
driver's machine has).

With ``workers_per_trial > 1`` the function trainable launches a Ray Train
``TorchTrainer`` of that many workers (DeepSpeed at that world size) and waits for it;
Ray Train's ``TuneReportCallback`` passes each epoch's report on to Tune. Train keeps
that run's checkpoints under the study's folder, named after the Tune trial, so a
restarted trial's trainer resumes from its last one.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Callable
from typing import Any

import torch
from ray import tune

from study import store
from study.run._engine import CPU_FALLBACK, granted_gpus, process_group_backend, trial_device
from study.run._trial import TrialRunner, TrialSetup
from study.spec import StudySpec

__all__ = ["CHECKPOINTS_KEPT", "trainable", "trial_function", "worker_scaling"]

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
        resources = {"cpu": spec.cpus_per_trial}
        if spec.gpus_per_worker > 0:
            resources["gpu"] = spec.gpus_per_worker
        return tune.with_resources(function, resources)
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
    device = trial_device()  # a granted GPU CUDA cannot see fails here, before any work
    if device.type == "cuda":
        torch.cuda.set_device(device)
    placement = _placement(device)
    runner = TrialRunner(setup, config)
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            runner.restore(directory)
    while runner.epoch < setup.epochs:
        metrics = runner.run_epoch()
        if runner.epoch == setup.epochs and setup.models_dir is not None and lead:
            # Before the last report: once Tune has it, the next stage may look for this.
            runner.save_model(store.join(setup.models_dir, f"{trial_id}.pt"))
        if runner.epoch not in setup.checkpoint_epochs:
            report({**metrics, **placement})
            continue
        with tempfile.TemporaryDirectory() as directory:
            runner.save(directory)  # every rank: DeepSpeed writes each rank's part
            report({**metrics, **placement}, checkpoint=tune.Checkpoint.from_directory(directory))


def worker_scaling(spec: StudySpec) -> tuple[Any, Any]:
    """The ``ScalingConfig`` and ``TorchConfig`` of a multi-worker trial's TorchTrainer:
    each worker asks Ray for the spec's CPUs and GPUs. Train joins the workers in a
    process group before they run a line of ours, so its backend is chosen here from the
    spec; under the test switch, GPU workers without CUDA make a gloo group."""
    from ray import train
    from ray.train.torch import TorchConfig

    gpus = spec.gpus_per_worker
    fallback = os.environ.get(CPU_FALLBACK) == "1"
    on_gpus = gpus > 0 and not fallback
    scaling = train.ScalingConfig(
        num_workers=spec.workers_per_trial,
        use_gpu=gpus > 0,
        resources_per_worker={"CPU": spec.cpus_per_trial, **({"GPU": gpus} if gpus else {})},
    )
    return scaling, TorchConfig(
        backend=process_group_backend(torch.device("cuda" if on_gpus else "cpu"))
    )


def _train_on_workers(config: dict[str, Any], setup: TrialSetup) -> None:
    from ray import train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    spec = setup.spec
    trial_id = tune.get_context().get_trial_id()
    scaling, torch_config = worker_scaling(spec)
    trainer = TorchTrainer(
        functools.partial(_worker, setup=setup, trial_id=trial_id),
        train_loop_config=config,
        torch_config=torch_config,
        scaling_config=scaling,
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


def _placement(device: torch.device) -> dict[str, str]:
    """Where each of the trial's processes trains, for its reports: the GPUs Ray granted
    it, the CUDA devices it sees and its device, under ``placement/<rank>/``."""
    own = {
        "gpu_ids": ",".join(granted_gpus() or []),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
        "device": str(device),
    }
    dist = torch.distributed
    ranks = [own]
    if dist.is_available() and dist.is_initialized():  # Ray Train's workers: rank 0 reports
        ranks = [{} for _ in range(dist.get_world_size())]
        dist.all_gather_object(ranks, own)
    return {
        f"placement/{rank}/{key}": value for rank, p in enumerate(ranks) for key, value in p.items()
    }
