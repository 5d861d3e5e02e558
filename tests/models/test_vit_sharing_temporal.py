"""Temporal deltas of vit_sharing: the training penalty, the non-keyframe pass and its cost."""

from __future__ import annotations

import pytest
import torch

from models.vit_sharing import POINTS, DeltaWork, ViTSharing, sharing_stats
from models.vit_sharing._temporal import frame_pass

__all__: list[str] = []

pytestmark = [
    pytest.mark.filterwarnings("ignore:Sparse CSR tensor support:UserWarning"),
    pytest.mark.usefixtures("one_thread"),
]

SIZE = 32
TINY = {"image_size": SIZE, "patch_size": 8, "depth": 2, "decoder_width": 16}


def _model(tasks: tuple[str, ...] = ("semseg", "depth"), **kwargs: object) -> ViTSharing:
    torch.manual_seed(0)
    return ViTSharing(tasks, **{**TINY, "temporal_l1_weight": 1e-3, **kwargs})  # type: ignore[arg-type]


def _frames(n: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames and their neighbours: a patch of each image changed."""
    g = torch.Generator().manual_seed(1)
    frames = torch.randn(n, 3, SIZE, SIZE, generator=g)
    neighbours = frames.clone()
    neighbours[..., 8:16, 8:16] += torch.randn(n, 3, 8, 8, generator=g)
    return frames, neighbours


@torch.no_grad()
def _random_deltas(model: ViTSharing, task: str, density: float, scale: float) -> None:
    g = torch.Generator().manual_seed(7)
    for gated in model.deltas[task].gated():
        keep = torch.rand(gated.delta.shape, generator=g) < density
        values = torch.randn(gated.delta.shape, generator=g, dtype=gated.delta.dtype)
        gated.delta.copy_(values * keep * scale)


@pytest.mark.parametrize(("task", "step"), [("semseg", "base"), ("depth", "gates")])
def test_penalty_is_zero_for_an_equal_neighbour_and_positive_otherwise(
    task: str, step: str
) -> None:
    model = _model().train()
    _random_deltas(model, "depth", 0.3, 0.05)
    model.set_stage(task, step)  # gates: sampled, one draw serves both frames
    frames, neighbours = _frames()
    assert model.temporal_penalty(frames, frames.clone()).item() == 0.0
    l1 = model.temporal_l1(task, frames, neighbours)
    assert set(l1) == set(POINTS) and all(v.item() > 0 for v in l1.values())
    penalty = model.temporal_penalty(frames, neighbours)
    assert penalty.item() > 0


def test_penalty_weights_each_point() -> None:
    model = _model(temporal_l1_weight={"fc1": 2.0}).train()
    assert model.temporal_l1_weight["fc1"] == 2.0 and model.temporal_l1_weight["qkv"] == 0.0
    model.set_stage("semseg", "base")
    frames, neighbours = _frames()
    l1 = model.temporal_l1("semseg", frames, neighbours)
    expected = 2.0 * l1["fc1"].item()
    assert model.temporal_penalty(frames, neighbours).item() == pytest.approx(expected, rel=1e-5)


def test_penalty_trains_only_the_stage_parameters() -> None:
    model = _model().train()
    _random_deltas(model, "depth", 0.3, 0.05)
    model.set_stage("depth", "gates")
    model.set_stage("depth", "delta_act")  # the mask fixed: ΔW alone trains
    frames, neighbours = _frames()
    model.temporal_penalty(frames, neighbours).backward()
    graded = {n for n, p in model.named_parameters() if p.grad is not None}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert graded and graded <= trainable
    assert all(n.startswith("deltas.depth.") and n.endswith(".delta") for n in graded)
    assert any(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if n in graded)


def test_off_by_default_and_refused_when_negative() -> None:
    model = ViTSharing(("semseg", "depth"), **TINY)  # type: ignore[arg-type]
    assert not model.temporal
    frames, neighbours = _frames()
    assert model.temporal_penalty(frames, neighbours).item() == 0.0
    with pytest.raises(ValueError, match="non-negative"):
        _model(temporal_l1_weight=-1.0)
    with pytest.raises(ValueError, match="unknown keys"):
        _model(temporal_threshold={"mlp": 0.1})
    with pytest.raises(ValueError, match="do not match"):
        model.temporal_l1("semseg", frames, neighbours[:1])


@torch.no_grad()
def test_forward_temporal_reuses_the_previous_frame() -> None:
    model = _model(("semseg", "depth")).double().eval()
    _random_deltas(model, "depth", 0.3, 0.05)
    frames, neighbours = (f.double() for f in _frames())
    plain = model(neighbours)
    keyframe, trace = model.forward_temporal(neighbours)
    for task in model.tasks:  # a keyframe is the eval forward
        torch.testing.assert_close(keyframe[task], plain[task], rtol=0, atol=0)
    again, _ = model.forward_temporal(neighbours, trace)
    for task in model.tasks:  # nothing moved: every activation is reused as it was
        torch.testing.assert_close(again[task], plain[task], rtol=0, atol=0)

    # With nothing dropped a non-keyframe computes the frame itself.
    exact = _model(("semseg", "depth"), temporal_threshold=0.0, delta_threshold=0.0)
    exact = exact.double().eval()
    _random_deltas(exact, "depth", 0.3, 0.05)
    _, trace = exact.forward_temporal(neighbours)
    for blocks in (0, 1, 2):
        moved, _ = exact.forward_temporal(frames, trace, task_blocks=blocks)
        expected = exact(frames)
        for task in exact.tasks:
            torch.testing.assert_close(moved[task], expected[task], rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="task_blocks"):
        exact.forward_temporal(frames, trace, task_blocks=3)
    model.train()
    with pytest.raises(RuntimeError, match="eval"):
        model.forward_temporal(frames)


@torch.no_grad()
def test_delta_work_counts_as_the_sharing_path() -> None:
    # float64, as the sharing-path test: a delta at its threshold could round either way.
    model = _model(("semseg", "depth"), delta_threshold=0.02).double().eval()
    _random_deltas(model, "depth", 0.05, 0.2)
    x = _frames()[0].double()
    _, trace = frame_pass(model, x, None, model.tasks)
    work: dict[str, dict[str, DeltaWork]] = {}
    blocks = len(model.encoder.blocks)
    # The same frame again, every sub-task block from the base: task sharing alone.
    frame_pass(model, x, trace, model.tasks, task_blocks=blocks, work=work)
    assert work["semseg"]["temporal"].flops == 0.0
    assert work["semseg"]["temporal"].density() == 0.0
    sharing = sharing_stats(model, "depth", x)
    counted = work["depth"]["task"]
    assert counted.kept == sharing.kept and counted.total == sharing.total
    tokens = model.encoder.patch_embed.num_patches + model.encoder.num_prefix_tokens
    nnz = sum(int(torch.count_nonzero(g.weight())) for g in model.deltas["depth"].gated())
    assert counted.flops + 2.0 * nnz * tokens * x.shape[0] == pytest.approx(sharing.flops)


def test_temporal_report() -> None:
    model = _model().eval()
    frames, neighbours = _frames()
    still = model.temporal_report(frames, frames)
    for task in model.tasks:
        assert still[task]["temporal_density"] == 0.0
        assert still[task]["temporal_gflops"] < model.dense_gflops(task)
    moved = model.compute_report(frames, neighbours)
    for task in model.tasks:
        row = moved[task]
        assert 0.0 < row["temporal_density"] <= 1.0
        assert all(0.0 <= row[f"temporal_density/{p}"] <= 1.0 for p in POINTS)
        assert row["temporal_gflops"] > still[task]["temporal_gflops"]
        assert row["temporal_gflops_vs_dense"] == pytest.approx(
            row["temporal_gflops"] / row["dense_gflops"]
        )
    assert "temporal_density" not in model.compute_report(frames)["depth"]
    blocks = len(model.encoder.blocks)
    shared = model.temporal_report(frames, neighbours, task_blocks=blocks)["depth"]
    assert shared["temporal_density"] != shared["temporal_density"]  # NaN: no temporal block
    assert model.training is False
