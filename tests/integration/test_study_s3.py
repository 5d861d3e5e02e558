"""A staged study whose results root is an S3 URI: the store, the Optuna journal, Tune's
experiments and the stages' models all land in the bucket, and a reader with an empty
cache queries them from there."""

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pytest
from ray import tune

from study.run import run_study
from study.spec import load_spec

# A whole study on a local Ray into the S3 endpoint; the store's S3 paths are tested without Ray.
pytestmark = pytest.mark.slow

SPEC = """
name: staged
seed: 0
dataset: {{image_size: 32, train_samples: 8, val_samples: 4}}
tasks: [semseg, depth]
architecture: vit_sharing
model: {{patch_size: 8, depth: 2, decoder_width: 16, image_size: 32}}
methods: [ew]
search_space: vit_sharing
stages:
  - {{task: semseg, step: base}}
  - {{task: depth, step: gates}}
concurrency: 1
scheduler: {{name: fifo}}
epochs: 1
batch_size: 4
baselines: none
results: {results}
"""


def _files(uri: str) -> set[str]:
    fs, path = pafs.FileSystem.from_uri(uri)
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    return {i.path[len(path) + 1 :] for i in infos if i.type == pafs.FileType.File}


@pytest.fixture(scope="module")
def study_uri(s3_bucket: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    tmp = tmp_path_factory.mktemp("s3study")
    os.environ["MTLSTUDY_CACHE"] = str(tmp / "driver-cache")
    root = f"{s3_bucket}/{uuid.uuid4().hex[:8]}/results"
    spec_path = tmp / "spec.yaml"
    spec_path.write_text(SPEC.format(results=root))
    spec, space = load_spec(spec_path)
    try:
        outcome = run_study(spec, space, log=lambda line: None)
    finally:
        del os.environ["MTLSTUDY_CACHE"]
    assert outcome.errors == 0
    assert outcome.location == f"{root}/staged"
    assert outcome.results.is_relative_to(tmp / "driver-cache")
    return outcome.location


def test_the_bucket_holds_the_whole_study(study_uri: str) -> None:
    files = _files(study_uri)
    assert {"spec.yaml", "optuna.journal"} <= files
    fs, path = pafs.FileSystem.from_uri(study_uri)
    trials = ds.dataset(f"{path}/trials", filesystem=fs).to_table().to_pandas()
    assert sorted(trials["stage"]) == ["depth-gates", "semseg-base"]
    assert (trials["status"] == "completed").all()
    history = ds.dataset(f"{path}/history", filesystem=fs).to_table().to_pandas()
    assert set(history["trial_id"]) == set(trials["trial_id"])
    # Each stage left its model in the bucket, and the second stage started from it.
    paths = trials.set_index("stage")["model_path"]
    for stage, model in paths.items():
        assert model.startswith(study_uri + "/models/"), stage
        assert model[len(study_uri) + 1 :] in files
    for phase in ("stage-semseg-base", "stage-depth-gates"):
        assert tune.Tuner.can_restore(f"{study_uri}/tune/{phase}")


def test_a_reader_elsewhere_queries_the_uri(study_uri: str, tmp_path: Path) -> None:
    env = {**os.environ, "MTLSTUDY_CACHE": str(tmp_path / "reader-cache")}
    done = subprocess.run(
        [sys.executable, "-m", "study.cli", "query", study_uri, "--format", "csv"]
        + ["--columns", "stage", "status", "--sort", "stage"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "stage,status",
        "depth-gates,completed",
        "semseg-base,completed",
    ]
    assert any((tmp_path / "reader-cache").rglob("*.parquet"))
