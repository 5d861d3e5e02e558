"""Tests for the RCM (reparameterised convolutions) architecture."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models._registry import create_model
from models.rcm import VARIANTS, RCMResNet, response_initialise
from models.tasks import get_task

__all__: list[str] = []

SIZE = 64


def _model(variant: str, tasks: tuple[str, ...] = ("semseg", "depth")) -> RCMResNet:
    torch.manual_seed(0)
    return RCMResNet(tasks, variant=variant, decoder_width=16)


def _images(n: int = 2, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, SIZE, SIZE, generator=g)


def test_registered() -> None:
    model = create_model("rcm_resnet", ["semseg"], variant="rc", decoder_width=16)
    assert isinstance(model, RCMResNet)


@pytest.mark.parametrize("variant", VARIANTS)
def test_shapes(variant: str) -> None:
    tasks = ("semseg", "depth", "normals")
    model = _model(variant, tasks).eval()
    with torch.no_grad():
        out = model(_images())
    assert set(out) == set(tasks)
    for task in tasks:
        assert out[task].shape == (2, get_task(task, 5).channels, SIZE, SIZE)
    assert (out["depth"] > 0).all()
    torch.testing.assert_close(
        out["normals"].norm(dim=1), torch.ones(2, SIZE, SIZE), atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("variant", ["rc_ri", "rc_ri_nff"])
def test_response_initialisation_is_exact(variant: str) -> None:
    model = _model(variant)
    convs = list(model.rep_convs())
    originals = [c.bank.detach().clone() for c in convs]
    response_initialise(model, _images(4, seed=2))
    x = _images(2, seed=3)
    for conv, w in zip(convs, originals, strict=True):
        for task in model.tasks:
            eff = (conv.modulator(task) @ conv.bank.flatten(1)).view_as(w)
            torch.testing.assert_close(eff, w, atol=1e-5, rtol=0)
        # The bank itself really changed (rows are principal filters).
        assert not torch.allclose(conv.bank, w, atol=1e-3)
        inp = torch.randn(2, conv.in_channels, 16, 16, generator=torch.Generator().manual_seed(4))
        plain = F.conv2d(inp, w, None, conv.stride, conv.padding, conv.dilation)
        torch.testing.assert_close(conv(inp, "semseg"), plain, atol=1e-4, rtol=1e-4)
    del x


def test_response_initialisation_keeps_network_function() -> None:
    plain = _model("rc").eval()
    ri = _model("rc_ri")
    response_initialise(ri, _images(4, seed=2))
    ri.eval()
    with torch.no_grad():
        a, b = plain(_images()), ri(_images())
    for task in a:
        torch.testing.assert_close(a[task], b[task], atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("variant", ["rc", "rc_nff", "ra_series", "ra_parallel"])
def test_banks_get_no_gradient(variant: str) -> None:
    model = _model(variant).train()
    out = model(_images())
    sum(o.float().mean() for o in out.values()).backward()
    banks = list(model.shared_parameters())
    assert banks and all(not p.requires_grad and p.grad is None for p in banks)
    for conv in model.rep_convs():
        for module in conv.per_task.values():
            assert all(p.grad is not None for p in module.parameters())


@pytest.mark.parametrize("variant", ["rc_ri", "rc_nff", "conv"])
def test_incremental_task_leaves_old_tasks_untouched(variant: str) -> None:
    model = _model(variant)
    if variant.startswith("rc_ri"):
        response_initialise(model, _images(4, seed=2))
    x = _images()
    model.eval()
    with torch.no_grad():
        before = model(x)
    model.add_task("normals", 3)
    model.freeze_except("normals")
    assert all(not p.requires_grad for t in ("semseg", "depth") for p in model.task_parameters(t))
    params = [p for p in model.parameters() if p.requires_grad]
    assert {id(p) for p in params} == {id(p) for p in model.task_parameters("normals")}
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    target = F.normalize(torch.randn(2, 3, SIZE, SIZE), dim=1)
    loss_fn = get_task("normals").loss
    model.train()
    first = None
    for _ in range(3):
        opt.zero_grad()
        out = model(x)
        loss = loss_fn(out["normals"], target)
        first = loss.item() if first is None else first
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        after = model(x)
    assert torch.equal(before["semseg"], after["semseg"])
    assert torch.equal(before["depth"], after["depth"])
    assert after["normals"].shape == (2, 3, SIZE, SIZE)


def _check_nff_rows(model: RCMResNet) -> None:
    for conv in model.rep_convs():
        for module in conv.per_task.values():
            g = module.parametrizations.weight.original0.flatten()
            rows = module.weight.flatten(1).norm(dim=1)
            torch.testing.assert_close(rows, g.abs(), atol=1e-5, rtol=1e-5)


def test_nff_rows_have_norm_g() -> None:
    model = _model("rc_nff")
    for conv in model.rep_convs():
        for module in conv.per_task.values():
            eye = torch.eye(conv.out_channels)[:, :, None, None]
            torch.testing.assert_close(module.weight, eye, atol=1e-6, rtol=0)
    _check_nff_rows(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    out = model.train()(_images())
    sum(o.float().pow(2).mean() for o in out.values()).backward()
    opt.step()
    _check_nff_rows(model)
    changed = any(
        not torch.allclose(m.weight, torch.eye(c.out_channels)[:, :, None, None])
        for c in model.rep_convs()
        for m in c.per_task.values()
    )
    assert changed


def test_nff_after_response_initialisation() -> None:
    model = _model("rc_ri_nff")
    response_initialise(model, _images(4, seed=2))
    _check_nff_rows(model)


def test_parameter_counts() -> None:
    conv = _model("conv").parameter_counts("semseg")
    rc = _model("rc").parameter_counts("semseg")
    series = _model("ra_series").parameter_counts("semseg")
    parallel = _model("ra_parallel").parameter_counts("semseg")
    assert conv["trainable"] > rc["trainable"] > 0
    assert conv["backbone_per_task"] > 10_000_000  # a full ResNet-18 per task
    assert rc["backbone_per_task"] < conv["backbone_per_task"] / 4
    # Series adapters are C_out×C_out like the modulators; parallel ones C_out×C_in.
    assert series["backbone_per_task"] == rc["backbone_per_task"]
    assert 0 < parallel["backbone_per_task"] < rc["backbone_per_task"]
    assert conv["shared_bank"] == 0 and rc["shared_bank"] > 10_000_000
    assert rc["stored_per_task"] == rc["backbone_per_task"] + rc["decoder"]


def test_bad_variant_and_pretrained(tmp_path) -> None:
    with pytest.raises(ValueError):
        RCMResNet(["semseg"], variant="nope")
    with pytest.raises(ValueError):
        response_initialise(_model("conv"), _images())
    path = tmp_path / "w.pt"
    torch.save({"unrelated": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="match no"):
        RCMResNet(["semseg"], variant="rc", decoder_width=16, pretrained_path=path)
    from torchvision.models import resnet18

    torch.save(resnet18(weights=None).state_dict(), path)
    model = RCMResNet(["semseg"], variant="rc", decoder_width=16, pretrained_path=path)
    assert model.conv1.bank.shape == (64, 3, 7, 7)


def test_trained_bank_gets_lr_over_tasks_and_blocks_task_addition() -> None:
    model = RCMResNet(
        ("semseg", "depth", "normals"), variant="rc", decoder_width=16, train_bank=True
    )
    banks = list(model.shared_parameters())
    assert banks and all(p.requires_grad for p in banks)
    groups = model.optimizer_groups(3.0)
    by_lr = {g["lr"]: {id(p) for p in g["params"]} for g in groups}
    assert by_lr[1.0] == {id(p) for p in banks}
    assert not by_lr[3.0] & by_lr[1.0]
    assert len(by_lr[3.0]) + len(by_lr[1.0]) == sum(1 for _ in model.parameters())
    with pytest.raises(RuntimeError, match="trained bank"):
        model.add_task("edges")
    with pytest.raises(ValueError, match="no shared bank"):
        RCMResNet(("semseg",), variant="conv", train_bank=True)


def test_frozen_banks_are_left_out_of_the_optimizer() -> None:
    model = _model("rc")
    (group,) = model.optimizer_groups(1e-3)
    assert {id(p) for p in group["params"]}.isdisjoint(id(p) for p in model.shared_parameters())


def test_initialise_from_data_runs_response_initialisation_only_for_ri() -> None:
    for variant, changes in (("rc", False), ("rc_ri", True), ("rc_ri_nff", True)):
        model = _model(variant)
        before = model.conv1.bank.detach().clone()
        model.initialise_from_data(_images(4, seed=2))
        assert (not torch.equal(before, model.conv1.bank)) == changes


def test_task_costs_count_one_task_alone() -> None:
    from models import count_gflops, task_costs

    model = _model("rc", ("semseg", "depth", "normals"))
    costs = task_costs(model, SIZE)
    total = count_gflops(model, SIZE)
    assert set(costs) == set(model.tasks)
    assert sum(c["gflops"] for c in costs.values()) == pytest.approx(total, rel=1e-6)
    semseg = model.parameter_counts("semseg")
    assert costs["semseg"]["params_stored"] == semseg["stored_per_task"]
    assert costs["semseg"]["params_trainable"] == semseg["stored_per_task"]
