"""Loss-balancing methods: ``create(name, tasks, **hp)`` returns a :class:`Balancer`."""

from models.balancing import (  # noqa: F401  (registers the methods)
    _gradient_recent,
    _gradient_weighting,
    _kpi_weighting,
    _loss_weighting,
)
from models.balancing._base import Balancer, GradientSource
from models.balancing._catalogue import methods_markdown
from models.balancing._registry import (
    create,
    defaults,
    list_methods,
    needs_gradients,
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
    "methods_markdown",
    "needs_gradients",
    "paper",
    "reads",
    "register_balancer",
]
