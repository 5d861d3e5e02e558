"""The training recipe: optimisers, per-step schedules and gradient clipping, alone and in
a trial on the real DeepSpeed engine."""

import math
from pathlib import Path

import pytest
import torch

from search_spaces import SearchSpace, SearchSpaceError, load_space
from study.run import TrialRunner, TrialSetup
from study.run._optim import (
    build_optimizer,
    build_schedule,
    lr_factor,
    optimizer_hp,
    steps_per_epoch,
)
from study.spec import DatasetSpec, OptimizerSpec, ScheduleSpec, StudySpec


def _params() -> list[dict]:
    return [{"params": [torch.nn.Parameter(torch.zeros(3))]}]


def test_build_optimizer_picks_the_class_and_refuses_foreign_hyperparameters() -> None:
    sgd = build_optimizer(_params(), "sgd", lr=0.1, momentum=0.9, nesterov=True)
    assert type(sgd) is torch.optim.SGD
    assert sgd.param_groups[0]["nesterov"] and sgd.param_groups[0]["momentum"] == 0.9
    adam = build_optimizer(_params(), "adam", lr=0.1, betas=[0.8, 0.9])
    assert type(adam) is torch.optim.Adam and adam.param_groups[0]["betas"] == (0.8, 0.9)
    assert type(build_optimizer(_params(), "adamw", lr=0.1)) is torch.optim.AdamW
    with pytest.raises(ValueError, match="takes no \\['momentum'\\]"):
        build_optimizer(_params(), "adamw", lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="unknown optimizer 'lamb'"):
        build_optimizer(_params(), "lamb", lr=0.1)


def test_optimizer_hp_keeps_todays_defaults_and_lets_the_space_win() -> None:
    # No search space values: AdamW at lr 1e-3 and no weight decay, as before the recipe.
    assert optimizer_hp(OptimizerSpec(), {}) == {
        "lr": 1e-3,
        "weight_decay": 0.0,
        "betas": (0.9, 0.999),
    }
    sgd = OptimizerSpec(name="sgd", momentum=0.9, nesterov=True)
    hp = optimizer_hp(sgd, {"lr": 0.01, "momentum": 0.95})
    assert hp == {"lr": 0.01, "weight_decay": 0.0, "momentum": 0.95, "nesterov": True}


def test_lr_factor_follows_each_formula() -> None:
    total, warm = 100, 10
    # Linear warm-up, then the decay over the steps after it.
    assert lr_factor(0, "poly", total, warm) == pytest.approx(0.1)
    assert lr_factor(9, "poly", total, warm) == pytest.approx(1.0)
    assert lr_factor(10, "poly", total, warm) == pytest.approx(1.0)
    assert lr_factor(55, "poly", total, warm, power=0.9) == pytest.approx(0.5**0.9)
    assert lr_factor(55, "cosine", total, warm) == pytest.approx(0.5)
    assert lr_factor(32, "cosine", total, warm) == pytest.approx(
        0.5 * (1 + math.cos(math.pi * 22 / 90))
    )
    assert lr_factor(99, "constant", total, warm) == 1.0
    # Past the end the decay stays at its last value instead of going negative or complex.
    assert lr_factor(150, "poly", total, warm) == 0.0
    # step: gamma every step_epochs epochs, counted from the first step.
    factors = [lr_factor(s, "step", 40, 0, 5, step_epochs=2, gamma=0.5) for s in (0, 9, 10, 25)]
    assert factors == [1.0, 1.0, 0.5, 0.25]
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_factor(0, "linear", total)


def test_schedule_sets_each_groups_rate_per_step() -> None:
    groups = [
        {"params": [torch.nn.Parameter(torch.zeros(1))]},
        {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.5},
    ]
    optimizer = build_optimizer(groups, "sgd", lr=0.1, momentum=0.9)
    schedule = build_schedule(optimizer, "poly", steps_per_epoch=4, epochs=5, warmup_epochs=0.5)
    seen = []
    for _ in range(20):
        seen.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        schedule.step()
    # Two warm-up steps, then poly over the remaining 18; a group's own rate is scaled alike.
    assert seen[0] == pytest.approx([0.05, 0.25])
    assert seen[1] == pytest.approx([0.1, 0.5])
    assert seen[11] == pytest.approx([0.1 * (1 - 9 / 18) ** 0.9, 0.5 * (1 - 9 / 18) ** 0.9])
    assert seen[-1][0] == pytest.approx(0.1 * (1 / 18) ** 0.9)
    assert all(a[0] >= b[0] for a, b in zip(seen[1:], seen[2:], strict=False))


def test_steps_per_epoch_matches_worker_batches() -> None:
    assert steps_per_epoch(33, 16) == 3  # one worker keeps the short last batch
    assert steps_per_epoch(33, 8, world=2) == 2  # several drop a global batch too small
    assert steps_per_epoch(3, 16) == 1


def test_spec_recipe_fields_defaults_and_refusals() -> None:
    spec = StudySpec(name="s", tasks=["semseg"])
    assert spec.optimizer.name == "adamw" and spec.schedule.name == "constant"
    assert spec.gradient_clip is None and spec.schedule.warmup_epochs == 0
    with pytest.raises(ValueError, match="warmup_epochs or warmup_steps"):
        ScheduleSpec(name="poly", warmup_epochs=1, warmup_steps=10)
    # DeepSpeed clips and takes any torch optimiser at every ZeRO stage.
    for recipe in ({"gradient_clip": 1.0}, {"optimizer": {"name": "sgd"}}):
        StudySpec(name="s", tasks=["semseg"], deepspeed={"zero_stage": 2}, **recipe)


def test_space_optim_section_names_only_what_the_optimiser_takes() -> None:
    space = load_space("default").model_dump()
    space["optim"]["momentum"] = {"type": "float", "low": 0.8, "high": 0.99, "default": 0.9}
    assert "momentum" in SearchSpace.model_validate(space).optim
    space["optim"]["learning_rate"] = space["optim"].pop("lr")
    with pytest.raises(ValueError, match="optim samples no \\['learning_rate'\\]"):
        SearchSpace.model_validate(space)
    assert issubclass(SearchSpaceError, ValueError)


# -- in a trial ------------------------------------------------------------------------


def _setup(**recipe: object) -> TrialSetup:
    spec = StudySpec(
        name="t",
        tasks=["semseg", "depth"],
        dataset=DatasetSpec(image_size=32, train_samples=24, val_samples=8),
        model={"backbone": "regnetx_002", "head_channels": 8},
        batch_size=8,
        epochs=2,
        baselines="none",
        **recipe,
    )
    return TrialSetup(spec=spec, tasks=tuple(spec.tasks))


def _config(lr: float, weight_decay: float = 1e-4) -> dict:
    optim = {"lr": lr, "weight_decay": weight_decay}
    return {"optim": optim, "model": {}, "method": "ew", "ew": {}}


def test_default_recipe_is_adamw_at_a_constant_rate() -> None:
    runner = TrialRunner(_setup(), _config(3e-3))
    runner.run_epoch()
    optimizer = runner.schedule.optimizer
    assert type(optimizer) is torch.optim.AdamW
    assert [g["lr"] for g in optimizer.param_groups] == [3e-3]
    assert optimizer.param_groups[0]["weight_decay"] == 1e-4


def test_trial_steps_sgd_poly_with_warmup_and_clipping(tmp_path: Path) -> None:
    recipe = {
        "optimizer": {"name": "sgd", "momentum": 0.9, "nesterov": True},
        "schedule": {"name": "poly", "power": 0.9, "warmup_steps": 2},
        "gradient_clip": 1e-3,
    }
    setup = _setup(**recipe)
    runner = TrialRunner(setup, _config(0.05, weight_decay=0.0))
    optimizer = runner.schedule.optimizer
    assert type(optimizer) is torch.optim.SGD and optimizer.param_groups[0]["nesterov"]
    steps = 3  # 24 samples in batches of 8
    rate = lambda step: 0.05 * lr_factor(step, "poly", 2 * steps, 2)  # noqa: E731
    assert optimizer.param_groups[0]["lr"] == pytest.approx(rate(0))

    # Clipping bounds how far one step moves the weights: Nesterov SGD's first step moves
    # them by lr × (1 + momentum) × grad.
    before = [p.detach().clone() for p in runner.engine.module.parameters()]
    images, targets, _ = next(iter(runner.train.batches(8, 0)))
    runner.train_step(images, targets)
    params = list(runner.engine.module.parameters())
    moved = torch.cat([(p.detach() - b).flatten() for p, b in zip(params, before, strict=True)])
    assert 0 < moved.norm() <= rate(0) * 1.9 * 1e-3 * 1.001
    assert optimizer.param_groups[0]["lr"] == pytest.approx(rate(1))

    runner.run_epoch()  # 3 more steps: 4 in all
    assert optimizer.param_groups[0]["lr"] == pytest.approx(rate(4))
    runner.save(tmp_path)
    resumed = TrialRunner(setup, _config(0.05, weight_decay=0.0))
    resumed.restore(tmp_path)
    assert resumed.schedule.last_epoch == 4
    assert resumed.schedule.optimizer.param_groups[0]["lr"] == pytest.approx(rate(4))
