"""Loss-balancing methods: ``create(name, tasks, **hp)`` returns a :class:`Balancer`.

What each method is (its reference, inputs and hyperparameters) lives in a catalogue that
imports no torch: ``list_methods``, ``defaults``, ``describe`` and the rest read it
alone. Names are imported on first use, and the implementations register themselves
when a method is first created.
"""

from typing import TYPE_CHECKING

from models.exports import lazy_exports

if TYPE_CHECKING:
    from models.balancing._base import Balancer
    from models.balancing._catalogue import (
        GradientSource,
        MethodInfo,
        defaults,
        describe,
        list_methods,
        methods_markdown,
        needs_gradients,
        paper,
        params_only,
        reads,
    )
    from models.balancing._registry import create, register_balancer
    from models.balancing.task_gradients import GradientSpace, TaskGramian
    from models.balancing.task_jacobian import StepGradients, TaskJacobian

__all__, __getattr__, __dir__ = lazy_exports(__name__, __file__)
