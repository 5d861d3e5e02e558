"""Running a study: the tuner's phases on Ray Tune, and one trial's data, model, balancer
and DeepSpeed engine under them.

:func:`run_study` is the entry point. A Tune trial calls :func:`trainable`, which builds a
:class:`TrialRunner` from the phase's :class:`TrialSetup` and the sampled config. Names
are imported on first use, so a Ray worker that runs a trial never imports the tuner.
"""

from typing import TYPE_CHECKING

from study.exports import lazy_exports

if TYPE_CHECKING:
    from study.run._baselines import Baselines, find_baselines, single_task_trials
    from study.run._costs import ModelCosts, model_costs
    from study.run._engine import build_engine, deepspeed_config, ensure_distributed, side_backward
    from study.run._op_cache import torch_extensions_dir
    from study.run._phases import ClusterTooSmall, scheduler
    from study.run._potentials import needs_potentials, resolve_potentials, stored_potentials
    from study.run._progress import ProgressLine, format_duration
    from study.run._recorder import StoreRecorder, history_rows, trained_with
    from study.run._search import (
        StorageUnreachable,
        StudySearch,
        journal_storage,
        mean_result,
        optuna_study_name,
        search_storage,
        tpe_sampler,
    )
    from study.run._setup import TrialKind, TrialSetup, checkpoint_epochs
    from study.run._signals import StudyInterrupted
    from study.run._splits import (
        Batch,
        DiskSplit,
        FrameBatch,
        Split,
        TensorSplit,
        to_device,
        train_with_neighbours,
        trial_splits,
        worker_batches,
    )
    from study.run._trainable import CHECKPOINTS_KEPT, trainable, trial_function
    from study.run._trial import TrialRunner
    from study.run._tuner import StudyOutcome, run_study

__all__, __getattr__, __dir__ = lazy_exports(__name__, __file__)
