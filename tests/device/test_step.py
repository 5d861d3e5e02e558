"""A training step's pieces off the CPU: batches moved by the trial, every architecture's
forward, cost counting, and one whole step (forward, Gramian, balancer, optimiser, meters)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from models import count_gflops, create_model, list_models
from models.balancing import TaskGramian, TaskJacobian, create
from models.tasks import get_task
from study.metrics import MultiTaskMeter, delta_m
from study.run import to_device
from study.run._precision import balanced_update
from study.run._trial import load_state

SMALL: dict[str, dict[str, Any]] = {
    "hard_sharing": {"head_channels": 8},
    "vmm": {"neck_channels": 16},
    "rcm_resnet": {},
    "vit_sharing": {"depth": 1, "image_size": 32},
}


def test_every_architecture_is_listed_here() -> None:
    assert set(list_models()) == set(SMALL)


def _batch(frames: bool) -> tuple:
    images = torch.randn(2, 3, 32, 32)
    targets = {
        "semseg": torch.zeros(2, 32, 32, dtype=torch.long),
        "detection": torch.tensor([[[1.0, 1.0, 9.0, 9.0, 0.0]], [[-1.0] * 5]]),
    }
    labelled = {"semseg": torch.tensor([True, False]), "detection": torch.tensor([True, True])}
    return (images, targets, labelled, *([torch.randn(2, 3, 32, 32)] if frames else []))


@pytest.mark.parametrize("frames", [False, True])
def test_the_trial_moves_every_part_of_a_batch_to_the_models_device(frames: bool) -> None:
    batch = _batch(frames)
    moved = to_device(batch, torch.device("meta"))
    tensors = [moved[0], *moved[1].values(), *moved[2].values(), *moved[3:]]
    assert len(tensors) == 5 + frames
    assert all(t.device.type == "meta" for t in tensors)
    assert moved[1].keys() == batch[1].keys() and moved[2].keys() == batch[2].keys()


def test_a_checkpoint_written_on_a_gpu_loads_on_a_cpu_machine(tmp_path: Path) -> None:
    # Storages tagged as CUDA's, as a GPU run writes them; without a GPU a plain load fails.
    def as_cuda(storage: Any) -> str | None:
        return "cuda:0" if storage.device.type == "cpu" else None

    path = tmp_path / "trial_state.pt"
    registry = torch.serialization._package_registry
    registry.insert(0, (0, as_cuda, lambda obj, location: None))
    try:
        torch.save({"epoch": 3, "balancer": {"warm": torch.ones(3)}}, path)
    finally:
        registry.pop(0)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path, weights_only=False)
    state = load_state(path)
    assert state["epoch"] == 3 and state["balancer"]["warm"].device.type == "cpu"


@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_architecture_runs_on_another_device(name: str, stand_in: Any) -> None:
    # The stand-in, not bare meta tensors: ViT sharing's gates read values (.item()).
    tasks = ["semseg", "depth"]
    torch.manual_seed(0)
    with stand_in.building():
        model = create_model(name, tasks, num_classes=4, **SMALL[name])
    model.to(stand_in.device)
    out = model(stand_in.put(torch.randn(2, 3, 32, 32)))
    assert set(out) == set(tasks)
    assert all(pred.device == stand_in.device for pred in out.values())


# FLOP counting needs shapes only, so bare meta tensors do; ViT sharing's gates read values.
@pytest.mark.parametrize("name", sorted(set(SMALL) - {"vit_sharing"}))
def test_cost_counting_probes_the_model_where_it_lives(name: str) -> None:
    model = create_model(name, ["semseg", "depth"], num_classes=4, **SMALL[name])
    expected = count_gflops(model, 32)
    assert count_gflops(model.to("meta"), 32) == expected > 0


@pytest.mark.parametrize(
    ("method", "space"),
    [("upgrad", "params"), ("imtl", "representation"), ("graddrop", "params"), ("moco", "params")],
)
def test_a_step_made_from_the_task_gradients_stays_on_the_models_device(
    method: str, space: str, stand_in: Any
) -> None:
    names = ("semseg", "depth")
    tasks = {n: get_task(n, 4) for n in names}
    torch.manual_seed(0)
    with stand_in.building():
        model = create_model("hard_sharing", names, num_classes=4, head_channels=8)
    model.to(stand_in.device)
    balancer = create(method, names)
    jacobian = TaskJacobian(model, space)
    images, targets, _ = to_device(
        (
            torch.randn(2, 3, 32, 32),
            {"semseg": torch.randint(0, 4, (2, 32, 32)), "depth": torch.rand(2, 1, 32, 32) + 0.5},
            {n: torch.ones(2, dtype=torch.bool) for n in names},
        ),
        stand_in.device,
    )
    preds = model(images)
    task_losses = [tasks[n].loss(preds[n].float(), targets[n]) for n in names]
    surrogate = balanced_update(balancer, jacobian, preds, task_losses)
    surrogate.backward()
    balancer.step()
    assert surrogate.device == stand_in.device
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(g.device == stand_in.device for g in grads)
    assert all(p.device == stand_in.device for p in balancer.parameters())


@pytest.mark.parametrize("method", ["upgrad", "uw", "gradnorm"])
def test_one_training_step_stays_on_the_models_device(method: str, stand_in: Any) -> None:
    names = ("semseg", "depth", "edges")
    tasks = {n: get_task(n, 4) for n in names}
    torch.manual_seed(0)
    with stand_in.building():
        model = create_model("hard_sharing", names, num_classes=4, head_channels=8)
    model.to(stand_in.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    balancer = create(method, names)
    gramian_of = (
        TaskGramian(model, balancer.gradients, "params") if balancer.gradients != "none" else None
    )
    batch = (
        torch.randn(2, 3, 32, 32),
        {
            "semseg": torch.randint(0, 4, (2, 32, 32)),
            "depth": torch.rand(2, 1, 32, 32) + 0.5,
            "edges": (torch.rand(2, 1, 32, 32) > 0.8).float(),
        },
        {n: torch.ones(2, dtype=torch.bool) for n in names},
    )
    images, targets, labelled = to_device(batch, stand_in.device)

    preds = model(images)
    task_losses = [tasks[n].loss(preds[n].float(), targets[n]) for n in names]
    gramian = gramian_of(task_losses) if gramian_of is not None else None
    losses = torch.stack(task_losses)
    total = balancer.combine(losses, gramian)
    total.backward()
    optimizer.step()
    balancer.step()
    assert total.device == stand_in.device
    assert all(p.device == stand_in.device for p in model.parameters())
    assert all(p.grad.device == stand_in.device for p in model.parameters() if p.grad is not None)

    model.eval()
    meter = MultiTaskMeter(tasks)
    with torch.no_grad():
        meter.update(model(images), targets, labelled)
    metrics = meter.compute()
    assert meter.state().device == stand_in.device
    # Any non-zero reference: an untrained model's edges may score 0, where Δm is undefined.
    reference = {t: {m: v or 1.0 for m, v in scores.items()} for t, scores in metrics.items()}
    assert isinstance(delta_m(metrics, reference, tasks), float)
