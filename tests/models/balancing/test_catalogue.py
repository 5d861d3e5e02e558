"""The catalogue describes exactly the registered methods, as their classes take them,
and reads without torch."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Sequence

import pytest
import torch

from models import balancing
from models.balancing import _catalogue, _registry
from models.balancing._base import Balancer


def test_every_registered_method_has_an_entry_and_every_entry_a_method() -> None:
    assert _registry.registered() == balancing.list_methods() == sorted(_catalogue.BUILTIN)


@pytest.mark.parametrize("name", sorted(_catalogue.BUILTIN))
def test_the_options_are_the_implementations_signature(name: str) -> None:
    cls = _registry.implementation(name)
    assert _registry.options(cls) == balancing.defaults(name)
    info = balancing.describe(name)
    assert (cls.paper, cls.gradients, cls.uses_kpis) == (info.paper, info.gradients, info.uses_kpis)
    assert info.paper and info.conventions


class _Wider(Balancer):
    def __init__(self, tasks: Sequence[str], c: float = 0.9) -> None:
        super().__init__(tasks)


class _Restated(Balancer):
    paper = "a reference of its own"

    def __init__(self, tasks: Sequence[str], c: float = 0.5) -> None:
        super().__init__(tasks)


def test_an_implementation_that_disagrees_with_its_entry_is_refused() -> None:
    with pytest.raises(TypeError, match=r"_Wider.__init__ takes \{'c': 0.9\}.*'c': 0.5"):
        _registry._check_against_catalogue("cagrad", _Wider)
    with pytest.raises(TypeError, match=r"_Restated sets \['paper'\]"):
        _registry._check_against_catalogue("cagrad", _Restated)


@pytest.fixture
def own_method() -> Iterator[str]:
    name = "halved"
    yield name
    _registry._METHODS.pop(name, None)
    _catalogue._METHODS.pop(name, None)


def test_a_method_of_ones_own_is_described_by_its_class(own_method: str) -> None:
    @balancing.register_balancer(own_method)
    class Halved(Balancer):
        paper = "half of each loss"

        def __init__(self, tasks: Sequence[str], scale: float = 0.5) -> None:
            super().__init__(tasks)
            self.scale = scale

        def weights(
            self, losses: torch.Tensor, gramian: torch.Tensor | None = None
        ) -> torch.Tensor:
            return torch.full_like(losses, self.scale)

    assert own_method in balancing.list_methods()
    assert balancing.defaults(own_method) == {"scale": 0.5}
    assert balancing.reads(own_method) == "losses"
    assert balancing.paper(own_method) == "half of each loss"
    assert balancing.create(own_method, ["a", "b"], scale=0.25).scale == 0.25
    with pytest.raises(ValueError, match="already registered"):
        balancing.register_balancer("upgrad")(Halved)


def test_the_catalogue_and_task_metrics_import_no_torch() -> None:
    code = (
        "import sys\n"
        "from models import balancing, task_metrics\n"
        "assert balancing.methods_markdown() and balancing.defaults('amtl')\n"
        "assert task_metrics.task_metrics('depth').headline == 'rmse'\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'timm')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
