from pathlib import Path

import pytest

from study.cli import _demo_spec
from study.spec import SpecError, load_spec

VALID = """
name: s1
tasks: [semseg, depth]
trials: 4
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


def test_demo_spec_is_valid() -> None:
    spec, space = load_spec(_demo_spec())
    assert spec.tasks == ["semseg", "depth", "normals", "edges"]
    assert spec.trials >= 8
    assert spec.objective == ("delta_m", "max")
    assert sorted(space.methods) == ["amtl", "dwa", "ew", "mgda", "uw"]


def test_defaults_fill_a_small_spec(tmp_path: Path) -> None:
    spec, _ = load_spec(_write(tmp_path, VALID))
    assert spec.architecture == "hard_sharing"
    assert spec.deepspeed.zero_stage == 0 and spec.scheduler.name == "asha"


@pytest.mark.parametrize(
    ("extra", "field", "expected"),
    [
        ("trials: many", "trials", "integer"),
        ("trials: 0", "trials", "greater than or equal to 1"),
        ("tasks: [semseg, sonar]", "tasks", "unknown task 'sonar'"),
        ("architecture: vgg", "architecture", "unknown architecture 'vgg'"),
        ("scheduler: {name: pbt}", "scheduler.name", "'median' or 'fifo'"),
        ("deepspeed: {zero_stage: 3, precision: bf16}", "deepspeed", "zero_stage 0 or 2"),
        ("epochs: 3\nepoch: 3", "epoch", "unknown field"),
        ("methods: [ew, fixed]", "methods", "not in the search space"),
        ("search_space: missing.yaml", "search_space", "not found"),
        ("deepspeed: {zero_stage: 3}\nmethods: [ew, mgda]", "deepspeed", "['mgda']"),
        (
            "gradient_space: representation\nmethods: [ew, graddrop, moco, excess_mtl]",
            "gradient_space",
            "['moco', 'excess_mtl']",
        ),
        (
            "architecture: rcm_resnet\nmodel: {variant: rc, decoder_width: 16}",
            "model",
            "head_channels",  # the default space's model argument, unknown to RCM
        ),
        (
            "architecture: rcm_resnet\nsearch_space: rcm\nbaseline_model: {variant: vgg}",
            "baseline_model",
            "unknown variant 'vgg'",
        ),
        ("methods: [ew, dwa]\nsampler: {name: grid}\ntrials: 3", "trials", "set trials: 4"),
        (
            "sampler: {name: random, startup_trials: 3, constant_liar: true}",
            "sampler",
            "startup_trials, constant_liar: options of the tpe sampler, not random",
        ),
        ("sampler: {startup_trials: 0}", "sampler.startup_trials", "greater than or equal to 1"),
        ("incremental: true\nmethods: [ew]", "incremental", "cannot add a task"),
        (
            "architecture: rcm_resnet\nsearch_space: rcm\nincremental: true\nmethods: [ew, dwa]",
            "methods",
            "nothing to balance",
        ),
        (
            "architecture: rcm_resnet\nsearch_space: rcm\nincremental: true\nmethods: [ew]\n"
            "model: {train_bank: true}",
            "incremental",
            "trained shared bank",
        ),
        ("potentials: {depth: 1.5}", "potentials", "expected a KPI in (0, 1]"),
    ],
)
def test_bad_field_is_one_line_naming_it(
    tmp_path: Path, extra: str, field: str, expected: str
) -> None:
    path = _write(tmp_path, VALID.replace("trials: 4", "") + extra + "\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert f"field '{field}'" in message and expected in message
    assert str(path) in message and "\n" not in message


def test_missing_required_field(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="field 'tasks': required field is missing"):
        load_spec(_write(tmp_path, "name: x\n"))


def test_not_a_mapping_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="expected a mapping"):
        load_spec(_write(tmp_path, "- a\n- b\n"))
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(_write(tmp_path, "name: [\n"))


def test_search_space_relative_to_the_spec(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text("methods: {dwa: {}}\n")
    spec, space = load_spec(_write(tmp_path, VALID + "search_space: mine.yaml\n"))
    assert list(space.methods) == ["dwa"]


def test_gradient_methods_on_frozen_banks_are_refused(tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(
        "model: {variant: {type: categorical, choices: [rc], default: rc}}\n"
        "methods: {ew: {}, pcgrad: {}}\n"
    )
    path = _write(tmp_path, VALID + "architecture: rcm_resnet\nsearch_space: space.yaml\n")
    with pytest.raises(SpecError, match=r"'methods'.*shares no trained parameter"):
        load_spec(path)
    trained = path.read_text() + "model: {train_bank: true}\n"
    spec, _ = load_spec(_write(tmp_path, trained))
    assert spec.model == {"train_bank": True}


def test_graddrop_reads_the_shared_features(tmp_path: Path) -> None:
    text = VALID + "gradient_space: representation\nmethods: [ew, graddrop]\n"
    spec, space = load_spec(_write(tmp_path, text))
    assert spec.gradient_space == "representation" and list(space.methods) == ["ew", "graddrop"]


def test_rcm_variants_spec_runs_every_variant_once() -> None:
    spec, space = load_spec(_demo_spec().parent / "rcm_variants.yaml")
    assert spec.sampler.name == "grid" and spec.trials == space.grid_size() == 4
    assert space.grid()["model/variant"] == ["conv", "rc", "rc_ri", "rc_ri_nff"]
    assert spec.baseline_model == {"variant": "conv"}


def test_incremental_epochs_count_per_task(tmp_path: Path) -> None:
    text = VALID + "architecture: rcm_resnet\nsearch_space: rcm\nmethods: [ew]\nepochs: 3\n"
    spec, _ = load_spec(_write(tmp_path, text + "incremental: true\n"))
    assert spec.total_epochs == 6
    spec, _ = load_spec(_write(tmp_path, text))
    assert spec.total_epochs == 3


def test_a_model_argument_the_spec_fixes_is_not_searched(tmp_path: Path) -> None:
    text = VALID + "architecture: rcm_resnet\nsearch_space: rcm\nmethods: [ew]\n"
    _, space = load_spec(_write(tmp_path, text))
    assert "variant" in space.model
    _, space = load_spec(_write(tmp_path, text + "model: {variant: rc}\n"))
    assert "variant" not in space.model and space.grid_size() == 1


VIT = (
    "architecture: vit_sharing\nsearch_space: vit_sharing\nmethods: [ew]\nbaselines: none\n"
    "model: {patch_size: 8, depth: 1, decoder_width: 8}\n"
)


@pytest.mark.parametrize(
    ("stages", "expected"),
    [
        ("[{task: depth, step: gates}]", "the first stage trains the base task"),
        ("[{task: semseg, step: base}, {task: depth, step: masked}]", "needs a depth-gates"),
        ("[{task: semseg, step: gates}]", "'semseg' is the base task"),
        ("[{task: semseg, step: base}, {task: edges, step: gates}]", "not one of the study's"),
        ("[{task: semseg, step: base}, {task: semseg, step: base}]", "listed twice"),
        (
            "[{task: semseg, step: base, space: {model: {depth: "
            "{type: int, low: 1, high: 2, default: 1}}}}]",
            "stages.0.space': model parameter(s) ['depth'] are not in the search space",
        ),
    ],
)
def test_bad_stages_are_one_line(tmp_path: Path, stages: str, expected: str) -> None:
    path = _write(tmp_path, VALID + VIT + f"stages: {stages}\n")
    with pytest.raises(SpecError, match="field 'stages") as err:
        load_spec(path)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_stages_need_an_architecture_with_stages(tmp_path: Path) -> None:
    path = _write(tmp_path, VALID + "baselines: none\nstages: [{task: semseg, step: base}]\n")
    with pytest.raises(SpecError, match="hard_sharing has no training stages"):
        load_spec(path)


def test_vit_sharing_demo_spec_is_valid() -> None:
    spec, space = load_spec(_demo_spec().parent / "vit_sharing.yaml")
    assert spec.objective == ("stage_kpi", "max")
    assert [s.name for s in spec.stages][:2] == ["semseg-base", "depth-gates"]
    assert {"l0_lambda", "delta_threshold"} <= set(space.model)
