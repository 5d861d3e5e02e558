"""An RCM trial: task-conditional backbones train under DeepSpeed with frozen banks."""

import pytest
import torch

from search_spaces import load_space
from study.run import TrialRunner, TrialSetup
from study.spec import DatasetSpec, StudySpec


def test_rcm_trial_trains_and_leaves_the_banks_frozen() -> None:
    spec = StudySpec(
        name="r",
        tasks=["semseg", "depth"],
        dataset=DatasetSpec(image_size=32, train_samples=8, val_samples=4),
        architecture="rcm_resnet",
        model={"variant": "rc", "decoder_width": 16},
        batch_size=4,
        baselines="none",
    )
    config = load_space("default").default_config("ew")
    config["model"] = {}
    runner = TrialRunner(TrialSetup(spec=spec, tasks=tuple(spec.tasks)), config)
    banks = [p.detach().clone() for p in runner.model.shared_parameters()]
    first, second = runner.run_epoch(), runner.run_epoch()
    assert torch.isfinite(torch.tensor([first["val_loss"], second["val_loss"]])).all()
    assert all(
        torch.equal(a, b) for a, b in zip(banks, runner.model.shared_parameters(), strict=True)
    )


def _incremental_spec(**kw: object) -> StudySpec:
    return StudySpec(
        name="inc",
        tasks=["semseg", "depth", "edges"],
        dataset=DatasetSpec(image_size=32, train_samples=8, val_samples=4),
        architecture="rcm_resnet",
        model={"variant": "rc_ri", "decoder_width": 16},
        methods=["ew"],
        batch_size=4,
        epochs=1,
        incremental=True,
        baselines="none",
        **kw,
    )


def _val_predictions(runner: TrialRunner) -> dict[str, torch.Tensor]:
    images, _, _ = next(iter(runner.val.batches(4, None)))
    runner.engine.eval()
    with torch.no_grad():
        return {k: v.clone() for k, v in runner.engine(images).items()}


def test_incremental_trial_adds_tasks_one_by_one_without_touching_earlier_ones() -> None:
    spec = _incremental_spec()
    runner = TrialRunner(TrialSetup(spec=spec, tasks=tuple(spec.tasks)), {"method": "ew"})
    seen: list[dict[str, torch.Tensor]] = []
    reports = []
    for _ in range(spec.total_epochs):
        reports.append(runner.run_epoch())
        seen.append(_val_predictions(runner))
    assert [r["training_task"] for r in reports] == ["semseg", "depth", "edges"]
    assert [sorted(s) for s in seen] == [
        ["semseg"],
        ["depth", "semseg"],
        ["depth", "edges", "semseg"],
    ]
    for later in seen[1:]:
        assert torch.equal(later["semseg"], seen[0]["semseg"])
    assert torch.equal(seen[2]["depth"], seen[1]["depth"])
    last = reports[-1]
    assert [last[f"weight/{t}"] for t in spec.tasks] == [0.0, 0.0, 1.0]
    assert all(last[f"forgetting/{t}"] == 0.0 for t in spec.tasks)
    # Costs per task: each task stores its modulators, BNs and decoder; banks are shared.
    counts = runner.model.parameter_counts("depth")
    assert last["params_stored/depth"] == counts["stored_per_task"]
    assert last["gflops/semseg"] > 0 and last["gflops"] == pytest.approx(
        sum(last[f"gflops/{t}"] for t in spec.tasks), rel=1e-6
    )


def test_incremental_trial_resumes_with_the_tasks_its_checkpoint_had(tmp_path) -> None:
    spec = _incremental_spec()
    setup = TrialSetup(spec=spec, tasks=tuple(spec.tasks))
    first = TrialRunner(setup, {"method": "ew"})
    first.run_epoch()
    first.run_epoch()
    before = _val_predictions(first)
    first.save(tmp_path)
    second = TrialRunner(setup, {"method": "ew"})
    second.restore(tmp_path)
    assert second.model.tasks == ("semseg", "depth") and second.training_task == "depth"
    after = _val_predictions(second)
    assert all(torch.equal(before[t], after[t]) for t in before)
    report = second.run_epoch()
    assert report["training_task"] == "edges" and report["forgetting/depth"] == 0.0


@pytest.mark.slow  # a whole incremental study on a local Ray
def test_incremental_study_records_what_each_task_was_trained_with(tmp_path) -> None:
    from study.run import run_study
    from study.spec import load_spec
    from study.store import load_history, load_trials

    path = tmp_path / "spec.yaml"
    path.write_text(
        "name: inc\ntasks: [semseg, depth]\narchitecture: rcm_resnet\nsearch_space: rcm\n"
        "model: {variant: rc, decoder_width: 16}\nmethods: [ew]\nincremental: true\n"
        "dataset: {image_size: 32, train_samples: 8, val_samples: 4}\nbatch_size: 4\n"
        f"epochs: 1\ntrials: 1\nconcurrency: 1\nbaselines: none\nresults: {tmp_path}\n"
    )
    spec, space = load_spec(path)
    assert run_study(spec, space, log=lambda line: None).errors == 0
    (row,) = load_trials(tmp_path / "inc").to_dict("records")
    assert row["status"] == "completed" and row["epochs"] == 2 and row["incremental"]
    assert list(row["trained_with.semseg"]) == ["semseg"]
    assert list(row["trained_with.depth"]) == ["semseg", "depth"]
    assert row["forgetting.semseg"] == 0.0
    assert row["task_params_stored.depth"] > 0 and row["task_gflops.depth"] > 0
    history = load_history(tmp_path / "inc", where="task == 'semseg' and metric == 'miou'")
    # semseg's metric is logged before and after depth was added, and did not move.
    assert sorted(history["epoch"]) == [1, 2] and history["value"].nunique() == 1


def test_a_diverged_incremental_task_fails_with_its_reason() -> None:
    spec = _incremental_spec()
    runner = TrialRunner(TrialSetup(spec=spec, tasks=tuple(spec.tasks)), {"method": "ew"})
    with torch.no_grad():
        for p in runner.model.decoders["semseg"].parameters():
            p.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match=r"non-finite training loss of \['semseg'\]"):
        runner.run_epoch()
