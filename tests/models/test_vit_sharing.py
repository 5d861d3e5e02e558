"""Tests for the ViT computation-sharing architecture (Shoouri et al. 2023)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import models
from models.tasks import get_task
from models.vit_sharing import POINTS, HardConcreteGate, ViTSharing
from models.vit_sharing._sharing import sparse_rows

__all__: list[str] = []

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 64
TINY = {"image_size": SIZE, "patch_size": 8, "depth": 2, "decoder_width": 16}


def _model(tasks: tuple[str, ...] = ("semseg", "depth"), **kwargs: object) -> ViTSharing:
    torch.manual_seed(0)
    return ViTSharing(tasks, **{**TINY, **kwargs})  # type: ignore[arg-type]


def _images(n: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def _random_deltas(model: ViTSharing, task: str, density: float, scale: float = 0.05) -> None:
    g = torch.Generator().manual_seed(7)
    for gated in model.deltas[task].gated():
        keep = torch.rand(gated.delta.shape, generator=g) < density
        values = torch.randn(gated.delta.shape, generator=g, dtype=gated.delta.dtype)
        gated.delta.copy_(values * keep * scale)


def test_registered() -> None:
    assert "vit_sharing" in models.list_models()
    model = models.create_model(
        "vit_sharing", ["semseg", "depth"], image_size=64, patch_size=8, depth=2
    )
    assert isinstance(model, ViTSharing)
    assert model.base_task == "semseg" and model.sub_tasks == ("depth",)


def test_shapes() -> None:
    tasks = ("semseg", "depth", "normals", "edges")
    model = _model(tasks).eval()
    with torch.no_grad():
        out = model(_images())
    assert set(out) == set(tasks)
    for task in tasks:
        assert out[task].shape == (2, get_task(task, 5).channels, SIZE, SIZE)
    assert (out["depth"] > 0).all()
    torch.testing.assert_close(
        out["normals"].norm(dim=1), torch.ones(2, SIZE, SIZE), atol=1e-5, rtol=0
    )
    with torch.no_grad():
        assert set(model(_images(), tasks=["edges"])) == {"edges"}


@pytest.mark.parametrize(
    ("tasks", "kwargs"),
    [
        (("semseg", "detection"), {}),
        (("semseg",), {"backbone": "resnet18"}),
        (("semseg",), {"image_size": 60}),
        (("semseg", "depth"), {"base_task": "normals"}),
        (("semseg",), {"delta_threshold": {"nope": 0.1}}),
    ],
)
def test_refused(tasks: tuple[str, ...], kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"^[^\n]+$"):
        _model(tasks, **kwargs)


def test_sub_task_equals_base_at_init() -> None:
    model = _model(("semseg", "depth", "normals")).train()
    features: list[torch.Tensor] = []
    handle = model.representation_module().register_forward_hook(
        lambda _m, _i, out: features.append(out)
    )
    model(_images())
    handle.remove()
    assert len(features) == 1  # one call for every task
    base, depth, normals = features[0].split(2)
    torch.testing.assert_close(depth, base, atol=0, rtol=0)
    torch.testing.assert_close(normals, base, atol=0, rtol=0)


def test_gates() -> None:
    gate = HardConcreteGate((200,), init_log_alpha=0.0).train()
    a, b = gate(), gate()
    assert ((a >= 0) & (a <= 1)).all() and not torch.equal(a, b)
    assert ((a > 0) & (a < 1)).any()  # not only the clamped ends
    gate.eval()
    torch.testing.assert_close(gate(), gate(), atol=0, rtol=0)
    # Stretch (−1.5, 1.5): sigmoid(log α) = 2/3 gives 2/3·3 − 1.5 = 0.5; log α = 0 gives 0.
    with torch.no_grad():
        gate.log_alpha.fill_(math.log(2.0))
    torch.testing.assert_close(gate(), torch.full((200,), 0.5))
    assert gate.stretch == (-1.5, 1.5) and gate.temperature == pytest.approx(2 / 3)
    # L0 = Σ sigmoid(log α) since log(−l/r) = 0; the per-tensor α adds in log space.
    torch.testing.assert_close(gate.l0(), torch.tensor(200 * 2 / 3))
    with torch.no_grad():
        gate.tensor_log_alpha.fill_(-1.0)
    low = gate.l0()
    assert low < 200 * 2 / 3
    with torch.no_grad():
        gate.log_alpha.fill_(-3.0)
    assert gate.l0() < low
    assert (gate() == 0).all()


def test_l0_penalty_follows_log_alpha() -> None:
    model = _model()
    start = model.l0_penalty("depth")
    assert model.penalty().detach().item() == pytest.approx(5e-8 * start.detach().item())
    with torch.no_grad():
        for gated in model.deltas["depth"].gated():
            gated.gate.log_alpha.sub_(4.0)
    assert model.l0_penalty("depth") < start


def _grads(params: object) -> list[bool]:
    return [p.grad is not None and bool(p.grad.ne(0).any()) for p in params]  # type: ignore[attr-defined]


def test_gates_step_freezes_the_base() -> None:
    model = _model().train()
    _random_deltas(model, "depth", 0.5)
    model.set_stage("depth", "gates")
    out = model(_images(), tasks=["depth"])
    (out["depth"].mean() + model.penalty()).backward()
    assert not any(p.grad is not None for p in model.shared_parameters())
    assert not any(p.grad is not None for p in model.decoders["semseg"].parameters())
    deltas = model.deltas["depth"]
    assert any(_grads(deltas.delta_parameters()))
    assert any(_grads(deltas.gate_parameters()))


def test_base_step_trains_no_delta() -> None:
    model = _model().train()
    model.set_stage("semseg", "base")
    out = model(_images())
    (out["semseg"].mean() + out["depth"].mean() + model.penalty()).backward()
    assert all(p.grad is None for p in model.deltas["depth"].parameters())
    assert any(_grads(model.shared_parameters()))
    with pytest.raises(ValueError, match="does not apply"):
        model.set_stage("depth", "base")


def test_masked_step_keeps_outside_entries_zero() -> None:
    model = _model().train()
    _random_deltas(model, "depth", 1.0)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for gated in model.deltas["depth"].gated():  # about half the gates closed
            gated.gate.log_alpha.copy_(torch.randn(gated.delta.shape, generator=g) * 3)
    model.eval()
    with torch.no_grad():
        before = model(_images(), tasks=["depth"])["depth"]
    model.train()
    model.set_stage("depth", "masked")
    model.eval()
    with torch.no_grad():  # folding z into ΔW does not change the sub-task
        torch.testing.assert_close(model(_images(), tasks=["depth"])["depth"], before)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    assert not any(p.requires_grad for p in model.deltas["depth"].gate_parameters())
    opt = torch.optim.AdamW(params, lr=0.1, weight_decay=0.1)
    snapshot = [d.delta.detach().clone() for d in model.deltas["depth"].gated()]
    for _ in range(2):
        opt.zero_grad()
        model(_images(), tasks=["depth"])["depth"].mean().backward()
        opt.step()
    assert float(model.penalty()) == 0.0
    changed = False
    for gated, old in zip(model.deltas["depth"].gated(), snapshot, strict=True):
        outside = ~gated.mask
        assert outside.any() and (gated.delta[outside] == 0).all()
        changed |= not torch.equal(gated.delta[gated.mask], old[gated.mask])
    assert changed


def test_delta_act_penalty() -> None:
    model = _model().train()
    _random_deltas(model, "depth", 0.2)
    model.set_stage("depth", "delta_act")
    model(_images(), tasks=["depth"])
    l1 = {p: v.detach().item() for p, v in model.delta_l1("depth").items()}
    assert set(l1) == set(POINTS) and all(v > 0 for v in l1.values())
    penalty = model.penalty()
    assert penalty.detach().item() == pytest.approx(2.5e-10 * sum(l1.values()), rel=1e-5)
    penalty.backward()
    assert any(_grads(model.deltas["depth"].delta_parameters()))


def test_parameter_groups() -> None:
    model = _model(("semseg", "depth", "edges"))
    shared = {id(p) for p in model.shared_parameters()}
    per_task = [{id(p) for p in model.task_parameters(t)} for t in model.tasks]
    everything = {id(p) for p in model.parameters()}
    assert shared.isdisjoint(set().union(*per_task))
    assert shared | set().union(*per_task) == everything
    assert model.last_shared_module() is model.encoder.norm


def test_sparse_rows_multiply_like_the_dense_matrix() -> None:
    g = torch.Generator().manual_seed(3)
    dense = torch.randn(6, 5, generator=g, dtype=torch.float64)
    dense[dense.abs() < 1.0] = 0.0
    dense[2] = 0.0  # an empty row, and the last row's non-zeros end the offsets
    table = torch.randn(5, 4, generator=g, dtype=torch.float64)
    rows = sparse_rows(dense)
    assert rows.nnz == int(torch.count_nonzero(dense))
    torch.testing.assert_close(rows.times(table), dense @ table)
    assert sparse_rows(torch.zeros(3, 5)).nnz == 0


@torch.no_grad()
def test_sharing_path_equals_eval_forward() -> None:
    # float64: a delta within float32 rounding of its threshold could be kept on one path
    # and dropped on the other; in float64 that is vanishingly unlikely.
    model = _model(("semseg", "depth", "normals"), delta_threshold=0.02).double().eval()
    _random_deltas(model, "depth", 0.05, scale=0.2)
    # normals: only the queries of head 0 in block 0 change, so the attention of the other
    # heads is skipped there.
    head = model.encoder.blocks[0].attn.head_dim
    model.deltas["normals"].blocks[0]["qkv"].delta[:head].normal_(0.0, 0.3)
    x = _images().double()
    plain = model(x)
    shared = model.forward_shared(x)
    for task in model.tasks:
        torch.testing.assert_close(shared[task], plain[task], rtol=1e-4, atol=1e-8)
    densities = model.delta_activation_density("depth", x)
    assert 0.0 < densities["all"] < 1.0
    assert all(0.0 < densities[p] < 1.0 for p in ("qkv", "fc1", "fc2"))


def test_compute_report() -> None:
    model = _model().eval()
    x = _images()
    report = model.compute_report(x)
    sub = report["depth"]
    assert sub["weight_density"] == 0.0 and sub["activation_density"] == 0.0
    assert sub["gflops"] < sub["dense_gflops"]
    assert report["semseg"]["gflops"] == pytest.approx(report["semseg"]["dense_gflops"])
    head = sum(p.numel() for p in model.decoders["depth"].parameters())
    assert model.stored_parameters("depth") == head
    _random_deltas(model, "depth", 1.0)  # every entry non-zero
    assert model.delta_weight_density("depth") == 1.0
    report = model.compute_report(x)["depth"]
    densities = [v for k, v in report.items() if k.startswith("activation_density")]
    assert all(0.0 <= v <= 1.0 for v in densities)
    assert report["gflops"] > sub["gflops"]
    assert model.task_gflops("depth", x) == pytest.approx(report["gflops"])
    assert model.training is False


def test_calibrated_thresholds_reach_the_density() -> None:
    model = _model().eval()
    _random_deltas(model, "depth", 0.05, scale=0.02)
    x = _images()
    model.calibrate_thresholds("depth", x, 0.1)
    densities = model.delta_activation_density("depth", x)
    assert densities["all"] == pytest.approx(0.1, abs=0.03)


def test_pretrained_path(tmp_path: Path) -> None:
    source = _model()
    path = tmp_path / "vit.pt"
    torch.save(source.encoder.state_dict(), path)
    torch.manual_seed(123)
    loaded = ViTSharing(("semseg",), pretrained_path=path, **TINY)  # type: ignore[arg-type]
    for a, b in zip(source.encoder.parameters(), loaded.encoder.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    with pytest.raises(FileNotFoundError):
        ViTSharing(("semseg",), pretrained_path=tmp_path / "missing.pt", **TINY)  # type: ignore[arg-type]
    torch.save({"head.weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="match no parameter"):
        ViTSharing(("semseg",), pretrained_path=tmp_path / "other.pt", **TINY)  # type: ignore[arg-type]


def test_gate_lr_lets_a_short_run_close_gates() -> None:
    closed = {}
    for gate_lr in (None, 0.5):
        model = _model(l0_lambda=1e-3, gate_lr=gate_lr)
        model.set_stage("depth", "gates")
        groups = model.optimizer_groups(1e-3)
        assert sum(len(g["params"]) for g in groups) == sum(
            1 for p in model.parameters() if p.requires_grad
        )
        optimizer = torch.optim.AdamW(groups, lr=1e-3)
        target = torch.rand(2, 1, SIZE, SIZE) + 1
        for _ in range(15):
            loss = get_task("depth", 5).loss(model(_images(), tasks=("depth",))["depth"], target)
            optimizer.zero_grad()
            (loss + model.penalty()).backward()
            optimizer.step()
        model.eval()
        closed[gate_lr] = 1 - model.delta_weight_density("depth")
    # At the weights' rate 15 steps barely move a log-α of 5; at gate_lr 0.5 gates close.
    assert closed[None] == 0.0 and closed[0.5] > 0.5


def test_weight_decay_leaves_the_gates_alone() -> None:
    model = _model(l0_lambda=0.0, gate_lr=0.5)
    model.set_stage("depth", "gates")
    # As the trial builds it: one weight decay for every group that does not set its own.
    optimizer = torch.optim.AdamW(model.optimizer_groups(1e-3), lr=1e-3, weight_decay=0.1)
    gates = list(model.deltas["depth"].gate_parameters())
    before = [g.detach().clone() for g in gates]
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.zeros_like(p)
    optimizer.step()
    # With no gradient, decay alone would take log-α from 5 to 5·(1 − 0.5·0.1).
    assert all(torch.equal(g, b) for g, b in zip(gates, before, strict=True))
