"""Pure PyTorch multi-task models: architectures, task records and balancing methods.

Imports no Ray, DeepSpeed or Optuna, so it can be used in any training loop. Names are
imported on first use, and the architectures register themselves when a model is first
listed or created: the balancing catalogue (:mod:`models.balancing`) and the tasks'
metrics (:mod:`models.task_metrics`) are read without importing torch.
"""

from typing import TYPE_CHECKING

from models.exports import lazy_exports

if TYPE_CHECKING:
    from models._capabilities import (
        ComputeReport,
        IncrementalTasks,
        InitialisedFromData,
        MultiTaskModel,
        OptimizerGroups,
        ParameterCounts,
        StagedTraining,
        TemporalPenalty,
    )
    from models._cost import count_gflops, count_parameters, task_costs
    from models._registry import create_model, list_models, register_model
    from models.tasks import Metric, Task, get_task, list_tasks

__all__, __getattr__, __dir__ = lazy_exports(__name__, __file__)
