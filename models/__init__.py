"""Pure PyTorch multi-task models: architectures, task records and balancing methods.

Imports no Ray, DeepSpeed or Optuna, so it can be used in any training loop. The
architectures register themselves when a model is first listed or created.
"""

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

__all__ = [
    "ComputeReport",
    "IncrementalTasks",
    "InitialisedFromData",
    "Metric",
    "MultiTaskModel",
    "OptimizerGroups",
    "ParameterCounts",
    "StagedTraining",
    "TemporalPenalty",
    "Task",
    "count_gflops",
    "count_parameters",
    "create_model",
    "get_task",
    "list_models",
    "list_tasks",
    "register_model",
    "task_costs",
]
