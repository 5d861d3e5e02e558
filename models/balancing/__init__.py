"""Loss-balancing methods: ``create(name, tasks, **hp)`` returns a :class:`Balancer`."""

from models.balancing import _loss_weighting  # noqa: F401  (registers the methods)
from models.balancing._base import Balancer, GradientSource
from models.balancing._registry import (
    create,
    defaults,
    list_methods,
    paper,
    reads,
    register_balancer,
)
from models.balancing.task_gradients import GradientSpace, TaskGramian

__all__ = [
    "Balancer",
    "GradientSource",
    "GradientSpace",
    "TaskGramian",
    "create",
    "defaults",
    "list_methods",
    "paper",
    "reads",
    "register_balancer",
]
