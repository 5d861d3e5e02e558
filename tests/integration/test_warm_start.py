"""A warm-started study first runs every method at the search space's defaults."""

from pathlib import Path

from search_spaces import load_space
from study.run import run_study
from study.spec import load_spec
from study.store import load_trials

SPEC = """
name: warm
seed: 5
dataset: {{image_size: 32, train_samples: 16, val_samples: 8}}
tasks: [semseg, depth]
model: {{backbone: regnetx_002}}
methods: [ew, dwa]
warm_start: true
trials: 2
concurrency: 1
epochs: 2
batch_size: 8
scheduler: {{name: median, grace_period: 1}}
baselines: none
results: {results}
"""


def test_warm_start_runs_each_method_at_its_defaults(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC.format(results=tmp_path))
    spec, space = load_spec(path)
    assert run_study(spec, space, log=lambda line: None).errors == 0
    trials = load_trials(tmp_path / "warm").set_index("method")
    assert sorted(trials.index) == ["dwa", "ew"]
    defaults = load_space("default")
    for method in ("ew", "dwa"):
        config = defaults.default_config(method)
        row = trials.loc[method]
        assert row["hp.optim.lr"] == config["optim"]["lr"]
        assert row["hp.model.head_channels"] == config["model"]["head_channels"]
    assert (
        trials.loc["dwa", "hp.dwa.temperature"]
        == defaults.default_config("dwa")["dwa"]["temperature"]
    )


def test_each_scheduler_name_builds_its_ray_scheduler(tmp_path: Path) -> None:
    from ray.tune.schedulers import (
        ASHAScheduler,
        FIFOScheduler,
        HyperBandScheduler,
        MedianStoppingRule,
    )

    from study.run import scheduler

    path = tmp_path / "spec.yaml"
    path.write_text(SPEC.format(results=tmp_path))
    spec, _ = load_spec(path)
    kinds = {
        "asha": ASHAScheduler,
        "hyperband": HyperBandScheduler,
        "median": MedianStoppingRule,
        "fifo": FIFOScheduler,
    }
    for name, kind in kinds.items():
        chosen = spec.model_copy(
            update={"scheduler": spec.scheduler.model_copy(update={"name": name})}
        )
        assert type(scheduler(chosen, 4)) is kind


def test_each_stage_samples_from_its_own_random_start(tmp_path: Path) -> None:
    from study.run._phases import _sampler

    path = tmp_path / "spec.yaml"
    path.write_text(SPEC.format(results=tmp_path).replace("median", "fifo"))
    spec, space = load_spec(path)
    spec = spec.model_copy(update={"sampler": spec.sampler.model_copy(update={"name": "random"})})

    def first_lr(phase: str) -> float:
        import optuna

        study = optuna.create_study(sampler=_sampler(spec, space, phase))
        return study.ask().suggest_float("lr", 1e-4, 1e-2, log=True)

    assert first_lr("stage-depth-gates") != first_lr("stage-normals-gates")
    assert first_lr("stage-depth-gates") == first_lr("stage-depth-gates")
    assert first_lr("multi_task") == first_lr("multi_task")


def test_the_spec_configures_tpe(tmp_path: Path) -> None:
    import optuna

    from study.run._phases import _sampler
    from study.spec import SamplerSpec

    path = tmp_path / "spec.yaml"
    path.write_text(
        SPEC.format(results=tmp_path).replace("median", "fifo")
        + "sampler: {startup_trials: 3, multivariate: true, constant_liar: true}\n"
    )
    spec, space = load_spec(path)
    tpe = _sampler(spec, space, "multi_task")
    assert isinstance(tpe, optuna.samplers.TPESampler)
    assert (tpe._n_startup_trials, tpe._multivariate, tpe._constant_liar) == (3, True, True)
    default = _sampler(spec.model_copy(update={"sampler": SamplerSpec()}), space, "multi_task")
    assert default._n_startup_trials == max(2, min(10, spec.trials // 2))
    assert not default._multivariate and not default._constant_liar
