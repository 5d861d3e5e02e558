"""The sharing benchmark times a random model at chosen densities, and a sub-task a staged
study trained, read back from a study folder written in the store's own formats."""

from pathlib import Path

import pytest
import torch

from models import create_model
from study.bench.sharing import format_table, measure_sharing, measure_trained_sharing
from study.cli import main
from study.store import write_spec, write_trial

SPEC = """
name: staged
dataset: {image_size: 32, train_samples: 8, val_samples: 4}
tasks: [semseg, depth]
architecture: vit_sharing
model: {patch_size: 8, depth: 2, decoder_width: 16, image_size: 32}
methods: [ew]
search_space: vit_sharing
stages:
  - {task: semseg, step: base}
  - {task: depth, step: gates}
baselines: none
"""

pytestmark = pytest.mark.usefixtures("one_thread")


def test_random_model_figures() -> None:
    result = measure_sharing(
        backbone="vit_tiny_patch16_224",
        image_size=32,
        patch_size=8,
        depth=2,
        batch_size=1,
        rounds=1,
    )
    assert result["ms"]["shared_sub"] > 0 and result["ms"]["dense_sub"] > 0
    assert result["max_abs_diff_vs_plain"] < 1e-3
    assert "speed-up" in format_table(result)


@pytest.fixture
def study(tmp_path: Path) -> Path:
    """A study folder as a staged study leaves it: its spec, a base and a sub-task trial,
    and the sub-task's model file (ΔW with about 10 % non-zeros)."""
    torch.manual_seed(0)
    model = create_model(
        "vit_sharing",
        ("semseg", "depth"),
        num_classes=5,
        patch_size=8,
        depth=2,
        decoder_width=16,
        image_size=32,
        delta_threshold=0.02,
    )
    with torch.no_grad():
        for gated in model.deltas["depth"].gated():
            gated.delta.copy_(torch.randn_like(gated.delta) * (torch.rand_like(gated.delta) < 0.1))
    models = tmp_path / "staged" / "models"
    models.mkdir(parents=True)
    torch.save(model.state_dict(), models / "sub.pt")
    write_spec(tmp_path, "staged", SPEC)
    common = {"status": "completed", "architecture": "vit_sharing"}
    write_trial(tmp_path, "staged", {**common, "trial_id": "base", "stage": "semseg-base"})
    write_trial(
        tmp_path,
        "staged",
        {
            **common,
            "trial_id": "sub",
            "stage": "depth-gates",
            "hp": {"model": {"delta_threshold": 0.02, "l0_lambda": 1e-8}},
            "model_path": str(models / "sub.pt"),
        },
    )
    return tmp_path / "staged"


def test_trained_sub_task_as_it_was_stored(study: Path) -> None:
    result = measure_trained_sharing(study, "sub", batch_size=2, rounds=1)
    assert result["sub_task"] == "depth" and result["config"]["batch_size"] == 2
    assert set(result["thresholds"].values()) == {0.02}
    assert 0.05 < result["weight_density"] < 0.15
    assert 0.0 < result["activation_density"]["all"] < 1.0
    assert result["max_abs_diff_vs_plain"] < 1e-3
    assert "trial sub (depth-gates)" in format_table(result)


def test_trained_sub_task_of_a_study_on_s3(
    study: Path, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow.fs as pafs

    monkeypatch.setenv("MTLSTUDY_CACHE", str(tmp_path / "cache"))
    fs, bucket_path = pafs.FileSystem.from_uri(s3_bucket)
    remote = f"{bucket_path}/bench-sharing/results/staged"
    pafs.copy_files(str(study), remote, destination_filesystem=fs)
    result = measure_trained_sharing(f"s3://{remote}", "sub", rounds=1)
    assert result["sub_task"] == "depth" and 0.05 < result["weight_density"] < 0.15


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--trial", "sub"], "--study and --trial go together"),
        (["--trial", "sub", "--study", "{study}", "--depth", "2"], "--depth shape the random"),
        (["--trial", "nope", "--study", "{study}"], "trial nope: not in study {study}"),
        (["--trial", "base", "--study", "{study}"], "expected a sub-task stage"),
        (["--trial", "sub", "--study", "{study}/models"], "no spec.yaml"),
    ],
)
def test_bad_arguments_are_one_line(
    study: Path, argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [a.format(study=study) for a in argv]
    says = says.format(study=study)
    assert main(["bench", "sharing", "--rounds", "1", *argv]) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
