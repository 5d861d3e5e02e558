from __future__ import annotations

import pytest
import torch

import models.vmm  # noqa: F401  (registers the architecture)
from models import create_model
from models._anchors import ssd_anchors
from models.vmm import VMM

TASKS = ["semseg", "depth", "normals", "detection"]
SMALL = {"backbone": "efficientnet_b0", "neck_channels": 16, "num_classes": 4}


@pytest.fixture(scope="module")
def model() -> VMM:
    torch.manual_seed(0)
    return create_model("vmm", TASKS, **SMALL)  # type: ignore[return-value]


def test_registered_and_predicts_every_task(model: VMM) -> None:
    assert isinstance(model, VMM)
    out = model(torch.randn(2, 3, 64, 64))
    assert set(out) == set(TASKS)
    assert out["semseg"].shape == (2, 4, 64, 64)
    assert out["depth"].shape == (2, 1, 64, 64) and bool((out["depth"] > 0).all())
    assert out["normals"].shape == (2, 3, 64, 64)
    norms = out["normals"].norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
    anchors = ssd_anchors(64, 64)
    assert out["detection"].shape == (2, anchors.shape[0], 8 + 3)  # 4 classes less background


def test_detection_layout_and_prior(model: VMM) -> None:
    model.eval()
    with torch.no_grad():
        det = model(torch.randn(2, 3, 64, 64))["detection"]
    model.train()
    anchors = ssd_anchors(64, 64)
    assert det.dtype == torch.float32
    assert torch.equal(det[0, :, 4:8], anchors) and torch.equal(det[1, :, 4:8], anchors)
    # Small initial location weights: decoded boxes start close to their anchors.
    assert torch.allclose(det[..., :4], det[..., 4:8], rtol=0.05, atol=1.0)
    probs = det[..., 8:].sigmoid()
    assert probs.mean().item() == pytest.approx(0.01, abs=0.003)


def test_non_divisible_input_matches_anchor_count() -> None:
    model = VMM(["detection"], **SMALL)
    det = model(torch.randn(1, 3, 72, 40))["detection"]
    assert det.shape[1] == ssd_anchors(72, 40).shape[0]


def test_shared_and_task_parameters_partition_the_model(model: VMM) -> None:
    shared = {id(p) for p in model.shared_parameters()}
    per_task = [{id(p) for p in model.task_parameters(t)} for t in TASKS]
    assert shared and all(per_task)
    groups = [shared, *per_task]
    for i, a in enumerate(groups):
        for b in groups[i + 1 :]:
            assert not a & b
    assert set().union(*groups) == {id(p) for p in model.parameters()}
    assert sum(map(len, groups)) == len(list(model.parameters()))
    last = {id(p) for p in model.last_shared_module().parameters()}
    assert last and last <= shared


def test_representation_feeds_every_head_and_backward_runs(model: VMM) -> None:
    recorded: list[torch.Tensor] = []

    def hook(module: torch.nn.Module, inputs: object, output: list[torch.Tensor]) -> None:
        recorded.extend(output)

    handle = model.representation_module().register_forward_hook(hook)
    try:
        out = model(torch.randn(2, 3, 64, 64))
    finally:
        handle.remove()
    assert len(recorded) == 3
    assert [f.shape[-1] for f in recorded] == [8, 4, 2]
    for task in TASKS:
        pred = out[task][..., 8:] if task == "detection" else out[task]
        grads = torch.autograd.grad(pred.square().mean(), recorded, retain_graph=True)
        assert all(g.abs().sum() > 0 for g in grads), task
    total = sum(pred.float().mean() for pred in out.values())
    model.zero_grad()
    total.backward()
    assert all(p.grad is not None for p in model.last_shared_module().parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())


def test_pretrained_path_loads_encoder_weights(tmp_path) -> None:
    source = VMM(["depth"], **SMALL)
    path = tmp_path / "encoder.pt"
    torch.save(source.encoder.state_dict(), path)
    target = VMM(["depth"], pretrained_path=path, **SMALL)
    for a, b in zip(source.encoder.parameters(), target.encoder.parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(FileNotFoundError):
        VMM(["depth"], pretrained_path=tmp_path / "missing.pt", **SMALL)


def test_default_backbone_reads_strides_8_to_32() -> None:
    model = VMM(["semseg"], neck_channels=8)
    assert model.encoder.feature_info.reduction() == [8, 16, 32]


def test_task_gramian_through_the_neck(model: VMM) -> None:
    from models.balancing.task_gradients import TaskGramian

    gramian = TaskGramian(model, "shared", "params")
    try:
        out = model(torch.randn(2, 3, 64, 64))
        losses = [out[t][..., 8:].mean() if t == "detection" else out[t].mean() for t in TASKS]
        matrix = gramian(losses)
    finally:
        gramian.close()
    assert matrix.shape == (4, 4) and bool(torch.isfinite(matrix).all())
    assert bool((matrix.diagonal() > 0).all())
