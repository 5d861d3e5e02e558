import pytest
import torch

from models import create_model, get_task
from models.balancing import TaskGramian
from models.balancing.task_gradients import through_trunk

TASKS = ("semseg", "depth", "normals")


def _setup() -> tuple[torch.nn.Module, torch.Tensor, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = create_model("hard_sharing", TASKS, num_classes=4, head_channels=8)
    images = torch.randn(4, 3, 32, 32)
    targets = {
        "semseg": torch.randint(0, 4, (4, 32, 32)),
        "depth": torch.rand(4, 1, 32, 32) + 0.1,
        "normals": torch.nn.functional.normalize(torch.randn(4, 3, 32, 32), dim=1),
    }
    return model, images, targets


def _losses(model: torch.nn.Module, images: torch.Tensor, targets: dict) -> list[torch.Tensor]:
    preds = model(images)
    return [get_task(t, 4).loss(preds[t], targets[t]) for t in TASKS]


def _brute_force(losses: torch.Tensor, inputs: list[torch.Tensor]) -> torch.Tensor:
    rows = []
    for loss in losses:
        grads = torch.autograd.grad(loss, inputs, retain_graph=True, allow_unused=True)
        rows.append(
            torch.cat(
                [
                    (torch.zeros_like(x) if g is None else g).reshape(-1)
                    for g, x in zip(grads, inputs, strict=True)
                ]
            )
        )
    jacobian = torch.stack(rows).double()
    return jacobian @ jacobian.T


@pytest.mark.parametrize("space", ["params", "representation"])
def test_gramian_matches_per_task_gradients(space: str) -> None:
    model, images, targets = _setup()
    gramian = TaskGramian(model, "shared", space)
    losses = _losses(model, images, targets)
    got = gramian(losses)
    if space == "params":
        expected = _brute_force(losses, list(model.shared_parameters()))
    else:
        expected = _brute_force(losses, gramian._aliases)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-10)
    # The graph survives, so the trial can still backpropagate the balanced loss.
    torch.stack(losses).sum().backward()
    gramian.close()


def test_last_shared_layer_gramian_and_no_recording_in_eval() -> None:
    model, images, targets = _setup()
    gramian = TaskGramian(model, "last_shared", "representation")
    losses = _losses(model, images, targets)
    expected = _brute_force(losses, list(model.last_shared_module().parameters()))
    assert torch.allclose(gramian(losses), expected, rtol=1e-4, atol=1e-10)
    gramian.close()
    fresh = TaskGramian(model, "shared", "params")
    with torch.no_grad():
        model(images)
    with pytest.raises(RuntimeError, match="no forward pass"):
        fresh([torch.zeros(())] * 3)


@pytest.mark.parametrize("retain_graph", [False, True])
def test_the_looped_and_batched_trunk_products_agree(retain_graph: bool) -> None:
    torch.manual_seed(0)
    trunk = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU())
    side = torch.nn.Conv2d(3, 4, 1)
    unused = torch.nn.Parameter(torch.randn(5))
    params = [*trunk.parameters(), *side.parameters(), unused]
    images = torch.randn(2, 3, 8, 8)
    grads = [torch.randn(3, 2, 8, 8, 8), torch.randn(3, 2, 4, 8, 8)]
    results = []
    for batched in (False, True):
        features = [trunk(images), side(images)]
        got = through_trunk(features, params, grads, retain_graph=retain_graph, batched=batched)
        results.append(got)
        if retain_graph:  # the graph is still there for another backward
            features[0].sum().backward()
    looped, batched_ = results
    assert looped[-1] is None and batched_[-1] is None
    for a, b, p in zip(looped[:-1], batched_[:-1], params[:-1], strict=True):
        assert a is not None and b is not None and a.shape == (3, *p.shape)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # Each task's row is its own vector-Jacobian product.
    features = [trunk(images), side(images)]
    row = torch.autograd.grad(features, params[:2], grad_outputs=[g[1] for g in grads])
    torch.testing.assert_close(looped[0][1], row[0])
