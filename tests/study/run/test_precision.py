"""Precision on the real components: fp16's loss scale in the task-gradient pass (checked
against fp32 gradients), what the engine's configuration asks of DeepSpeed, and the
refusals of what cannot run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from models.balancing import TaskGramian, create
from study.run import deepspeed_config
from study.run._precision import balanced_loss, unscaled_grads, uses_channels_last
from study.spec import SpecError, StudySpec, load_spec


class _Tiny(nn.Module):
    """A shared trunk and two heads, as TaskGramian reads them."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(8, 16), nn.Tanh())
        self.heads = nn.ModuleList([nn.Linear(16, 1), nn.Linear(16, 1)])

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        return self.trunk.parameters()

    def representation_module(self) -> nn.Module:
        return self.trunk

    def last_shared_module(self) -> nn.Module:
        return self.trunk[0]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = self.trunk(x)
        return [head(features) for head in self.heads]


#: Task losses this small have gradients below fp16's smallest subnormal (6e-8).
_TINY_LOSS = 1e-7


def _gramian(model: _Tiny, space: str, scale: float, dtype: torch.dtype) -> torch.Tensor:
    torch.manual_seed(1)
    x = torch.randn(4, 8)
    model = model.to(dtype)
    gramian_of = TaskGramian(model, "shared", space)  # type: ignore[arg-type]
    # As a trial computes them: the predictions in float32, the network in its precision.
    preds = model(x.to(dtype))
    losses = [
        _TINY_LOSS * (p.float() - t).pow(2).mean() for p, t in zip(preds, (1.0, -1.0), strict=True)
    ]
    try:
        return gramian_of(losses, scale)
    finally:
        gramian_of.close()


@pytest.mark.parametrize("space", ["params", "representation"])
def test_fp16_task_gradients_underflow_unscaled_and_match_fp32_scaled(space: str) -> None:
    torch.manual_seed(0)
    model = _Tiny().half()  # fp16 weights; fp32 reference from the very same values
    reference = _gramian(_copy(model).float(), space, 1.0, torch.float32)
    assert reference.diagonal().min() > 0

    underflowed = _gramian(_copy(model), space, 1.0, torch.float16)
    assert underflowed.abs().max() < 1e-3 * reference.abs().max()

    scaled = _gramian(_copy(model), space, 2.0**16, torch.float16)
    assert scaled.dtype == torch.float64
    assert torch.allclose(scaled, reference, rtol=2e-2, atol=1e-3 * reference.abs().max())


def test_an_overflowing_scale_gives_a_non_finite_gramian() -> None:
    torch.manual_seed(0)
    model = _Tiny().half()
    assert not _gramian(model, "params", 2.0**60, torch.float16).isfinite().all()
    with pytest.raises(ValueError, match="loss scale must be > 0"):
        _gramian(model, "params", 0.0, torch.float16)


def _copy(model: _Tiny) -> _Tiny:
    copy = _Tiny()
    copy.load_state_dict(model.state_dict())
    return copy.to(next(model.parameters()).dtype)


@pytest.mark.parametrize("fp16", [True, False])
def test_an_overflowed_gramian_skips_the_step_under_fp16_only(fp16: bool) -> None:
    torch.manual_seed(0)
    model = _Tiny().half()
    balancer = create("upgrad", ("a", "b"))
    gramian_of = TaskGramian(model, "shared", "params")
    preds = model(torch.randn(4, 8).half())
    losses = [p.float().pow(2).mean() for p in preds]
    if not fp16:
        # In fp32 or bf16 a non-finite gradient is a diverged trial, named as before.
        with pytest.raises(FloatingPointError, match="non-finite gradient"):
            balanced_loss(balancer, gramian_of, preds, losses, 2.0**60, fp16)
        return
    total = balanced_loss(balancer, gramian_of, preds, losses, 2.0**60, fp16)
    # NaN: DeepSpeed's overflow check skips this step; the balancer saw nothing.
    assert total.isnan() and total.requires_grad
    assert torch.equal(balancer.last_weights, torch.ones(2))
    finite = balanced_loss(balancer, gramian_of, preds, losses, 2.0**8, fp16)
    assert finite.isfinite() and not torch.equal(balancer.last_weights, torch.ones(2))


def test_a_balancers_own_gradients_are_unscaled_and_a_preset_one_kept() -> None:
    losses = torch.tensor([0.5, 2.0])
    expected = create("uw", ("a", "b"))
    expected.combine(losses).backward()
    (want,) = [p.grad.clone() for p in expected.parameters()]

    balancer = create("uw", ("a", "b"))
    (param,) = balancer.parameters()
    scale = 2.0**12
    with unscaled_grads(balancer.parameters(), scale):
        (balancer.combine(losses) * scale).backward()  # as engine.backward scales it
    assert torch.allclose(param.grad, want)

    # GradNorm sets its weights' gradient itself, before the backward: it is kept.
    preset = torch.tensor([0.25, -0.25])
    param.grad = preset.clone()
    with unscaled_grads([param], scale):
        (balancer.combine(losses) * scale).backward()
    assert torch.allclose(param.grad, preset + want)


def test_deepspeed_config_of_each_precision() -> None:
    fp16 = deepspeed_config(8, 2, "fp16", gradient_clip=0.5)
    assert fp16["fp16"]["enabled"] and not fp16["bf16"]["enabled"]
    assert fp16["fp16"]["loss_scale"] == 0  # dynamic
    assert fp16["fp16"]["initial_scale_power"] == 16 and fp16["fp16"]["min_loss_scale"] == 1
    assert fp16["gradient_clipping"] == 0.5 and fp16["zero_allow_untested_optimizer"]
    bf16 = deepspeed_config(8, 0, "bf16")
    assert bf16["bf16"]["enabled"] and not bf16["fp16"]["enabled"]
    assert bf16["gradient_clipping"] == 0.0  # DeepSpeed's "no clipping"
    with pytest.raises(ValueError, match="expected fp32, bf16 or fp16"):
        deepspeed_config(8, 0, "fp8")


def test_deepspeeds_cpu_accelerator_cannot_run_fp16_here() -> None:
    # Why the spec refuses fp16 without GPUs: DeepSpeed refuses it on this CPU (oneDNN has
    # no fp16 kernels for it) when the engine is built.
    from study.run import ensure_distributed

    ensure_distributed()
    from deepspeed.accelerator import get_accelerator

    accelerator = get_accelerator()
    if accelerator.device_name() != "cpu" or accelerator.is_fp16_supported():
        pytest.skip("an accelerator that runs fp16")
    assert not accelerator.is_fp16_supported()


def _spec_file(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(f"name: s\ntasks: [semseg, depth]\n{extra}\n")
    return path


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            "deepspeed: {precision: fp16}",
            "fp16 needs GPUs (gpus_per_worker > 0); use bf16 or fp32 on the CPU",
        ),
        (
            "architecture: vit_sharing\nchannels_last: true",
            "channels_last: true, but vit_sharing runs a transformer on tokens",
        ),
    ],
)
def test_refused_in_one_line(tmp_path: Path, extra: str, expected: str) -> None:
    path = _spec_file(tmp_path, extra)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_what_runs_now_is_accepted() -> None:
    spec = StudySpec(
        name="s",
        tasks=["semseg"],
        gpus_per_worker=1,
        deepspeed={"precision": "fp16", "zero_stage": 1},
        optimizer={"name": "sgd"},
        gradient_clip=1.0,
    )
    assert spec.deepspeed.precision == "fp16" and spec.cudnn_benchmark
    assert spec.channels_last is None


def test_channels_last_defaults_on_for_convolutions_on_a_gpu() -> None:
    spec = StudySpec(name="s", tasks=["semseg"])
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert uses_channels_last(spec, "hard_sharing", cuda)
    assert not uses_channels_last(spec, "hard_sharing", cpu)
    assert not uses_channels_last(spec, "vit_sharing", cuda)
    on = spec.model_copy(update={"channels_last": True})
    off = spec.model_copy(update={"channels_last": False})
    assert uses_channels_last(on, "vmm", cpu) and not uses_channels_last(off, "vmm", cuda)
    # In a search over both, the transformer ignores it.
    both = {"hard_sharing": {}, "vit_sharing": {}}
    mixed = StudySpec(name="s", tasks=["semseg"], architectures=both, channels_last=True)
    assert not uses_channels_last(mixed, "vit_sharing", cpu)
