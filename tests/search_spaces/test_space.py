import optuna
import pytest

from search_spaces import SearchSpaceError, SpaceOverride, load_space


def _write(tmp_path, text: str):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def test_builtin_space_samples_conditional_method_parameters() -> None:
    space = load_space("default")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    sample = space.define_by_run()
    study.optimize(lambda t: sample(t) or 0.0, n_trials=120)
    for trial in study.trials:
        method = trial.params["method"]
        assert "optim/lr" in trial.params
        assert ("dwa/temperature" in trial.params) == (method == "dwa")
        assert ("cagrad/c" in trial.params) == (method == "cagrad")
        assert 3e-4 <= trial.params["optim/lr"] <= 1e-2
    assert {"ew", "dwa", "mgda", "amtl"} <= {t.params["method"] for t in study.trials}


def test_builtin_space_offers_every_method_but_fixed() -> None:
    from models import balancing

    offered = set(load_space("default").methods)
    assert offered == set(balancing.list_methods()) - {"fixed"}


def test_default_config_and_restriction() -> None:
    space = load_space("default")
    assert space.default_config("dwa")["dwa"] == {"temperature": 2.0}
    assert list(space.restricted_to(["dwa"]).methods) == ["dwa"]
    with pytest.raises(SearchSpaceError, match="not in the search space"):
        space.restricted_to(["fixed"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("methods: {nope: {}}", "unknown balancing method 'nope'"),
        ("methods: {dwa: {temp: {type: float, low: 1, high: 2, default: 1}}}", "no hyperparameter"),
        ("methods: {ew: {}}\noptim: {lr: {type: float, low: 1, high: 2, default: 3}}", "outside"),
        (
            "methods: {ew: {}}\noptim: {lr: {type: float, low: 0, high: 2, log: true, default: 1}}",
            "log",
        ),
        (
            "methods: {ew: {}}\nmodel: {w: {type: categorical, choices: [1, 2], default: 3}}",
            "not one of",
        ),
        ("methods: {}", "methods"),
        ("methods: [", "not valid YAML"),
    ],
)
def test_bad_space_is_one_line_naming_the_file(tmp_path, text: str, message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(SearchSpaceError, match=message) as info:
        load_space(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_space_file(tmp_path) -> None:
    with pytest.raises(SearchSpaceError, match="not found"):
        load_space(tmp_path / "none.yaml")


def test_define_by_run_pickles() -> None:
    import pickle

    sample = pickle.loads(pickle.dumps(load_space("default").define_by_run()))
    study = optuna.create_study()
    study.optimize(lambda t: sample(t) or 0.0, n_trials=2)
    assert all("method" in t.params for t in study.trials)


def test_an_override_replaces_only_its_parameters() -> None:
    space = load_space("vit_sharing")
    override = SpaceOverride.model_validate(
        {"optim": {"lr": {"type": "float", "low": 5e-4, "high": 1e-3, "default": 8e-4}}}
    )
    staged = space.overridden(override)
    assert (staged.optim["lr"].low, staged.optim["lr"].high) == (5e-4, 1e-3)
    assert staged.optim["weight_decay"] == space.optim["weight_decay"]
    assert staged.model == space.model and space.optim["lr"].low == 2e-3  # space unchanged
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    sample = staged.define_by_run()
    study.optimize(lambda t: sample(t) or 0.0, n_trials=5)
    assert all(5e-4 <= t.params["optim/lr"] <= 1e-3 for t in study.trials)
    with pytest.raises(SearchSpaceError, match=r"optim parameter\(s\) \['momentum'\]"):
        space.overridden(SpaceOverride(optim={"momentum": override.optim["lr"]}))


def test_a_long_message_keeps_its_start_and_its_advice() -> None:
    from search_spaces import MAX_MESSAGE, one_line

    text = "spec.yaml: dataset folder /" + "very/long/" * 60 + "nyud not found; run 'x'"
    short = one_line(text)
    assert len(short) == MAX_MESSAGE and "…" in short
    assert short.startswith("spec.yaml: dataset folder /") and short.endswith("run 'x'")
    assert one_line("a\nb\tc") == "a b c"
