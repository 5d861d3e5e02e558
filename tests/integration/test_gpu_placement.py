"""GPUs on a real Ray without a GPU: Ray schedules by the GPUs a node declares, so a node
declaring two places GPU trials and Ray Train workers as a GPU machine would, and the
test switch lets the granted trials train on the CPU. A cluster without GPUs refuses the
same spec before any trial starts."""

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from ray.cluster_utils import Cluster

from study.run import run_study
from study.run._engine import CPU_FALLBACK
from study.spec import load_spec
from study.store import load_trials

SPEC = """
name: {name}
seed: 3
dataset: {{image_size: 32, train_samples: 16, val_samples: 8}}
tasks: [semseg, depth]
model: {{backbone: regnetx_002}}
methods: [ew]
trials: {trials}
concurrency: 2
cpus_per_trial: 1
workers_per_trial: {workers}
gpus_per_worker: 1
epochs: 1
batch_size: 4
scheduler: {{name: fifo}}
baselines: none
results: {results}
"""


def _write_spec(tmp: Path, name: str, trials: int = 2, workers: int = 1) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(SPEC.format(name=name, trials=trials, workers=workers, results=tmp / "results"))
    return path


@pytest.fixture(scope="module")
def two_gpus() -> Iterator[str]:
    """A one-node Ray of two CPUs and two declared GPUs; trials may fall back to the CPU."""
    saved = os.environ.get(CPU_FALLBACK)
    os.environ[CPU_FALLBACK] = "1"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "num_gpus": 2})
    try:
        yield cluster.address
    finally:
        cluster.shutdown()
        if saved is None:
            del os.environ[CPU_FALLBACK]
        else:
            os.environ[CPU_FALLBACK] = saved


def _placements(study: Path) -> dict[str, dict[str, str]]:
    """Each trial's last report to Tune, as Tune stored it: ``placement/<rank>/<key>``."""
    found = {}
    for path in (study / "tune").glob("**/result.json"):
        last = json.loads(path.read_text().splitlines()[-1])
        found[last["trial_id"]] = {k: v for k, v in last.items() if k.startswith("placement/")}
    return found


def test_each_trial_asks_for_and_gets_its_own_gpu(tmp_path: Path, two_gpus: str) -> None:
    spec, space = load_spec(_write_spec(tmp_path, "gpus"))
    assert run_study(spec, space, address=two_gpus, log=lambda line: None).errors == 0
    study = tmp_path / "results" / "gpus"
    trials = load_trials(study)
    assert len(trials) == 2 and set(trials["status"]) == {"completed"}
    placements = _placements(study)
    assert sorted(placements) == sorted(trials["trial_id"])
    for placement in placements.values():
        # One GPU granted, and the only one CUDA was let see; no CUDA here: the CPU.
        assert placement["placement/0/gpu_ids"] in {"0", "1"}
        assert placement["placement/0/cuda_visible_devices"] == placement["placement/0/gpu_ids"]
        assert placement["placement/0/device"] == "cpu"
        assert "placement/1/gpu_ids" not in placement


@pytest.mark.slow
def test_each_ray_train_worker_gets_its_own_gpu(tmp_path: Path, two_gpus: str) -> None:
    spec, space = load_spec(_write_spec(tmp_path, "workers", trials=1, workers=2))
    assert run_study(spec, space, address=two_gpus, log=lambda line: None).errors == 0
    study = tmp_path / "results" / "workers"
    (row,) = load_trials(study).to_dict("records")
    assert row["status"] == "completed"
    (placement,) = _placements(study).values()
    # Two workers on one node: a GPU each, and both GPUs visible to both (Ray Train's way).
    ids = {placement["placement/0/gpu_ids"], placement["placement/1/gpu_ids"]}
    assert ids == {"0", "1"}
    for rank in (0, 1):
        assert placement[f"placement/{rank}/cuda_visible_devices"] in {"0,1", "1,0"}
        assert placement[f"placement/{rank}/device"] == "cpu"


def test_a_cluster_without_gpus_refuses_the_spec_before_any_trial(tmp_path: Path) -> None:
    spec = _write_spec(tmp_path, "nogpu")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0})
    try:
        done = subprocess.run(
            [sys.executable, "-m", "study.cli", "run", str(spec), "--address", cluster.address],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    finally:
        cluster.shutdown()
    assert done.returncode == 2, done.stderr
    assert "searching" not in done.stdout and "baselines" not in done.stdout  # before any trial
    assert done.stderr.strip().splitlines()[-1] == (
        "mtlstudy: error: field 'gpus_per_worker': the spec asks for 1 GPU per worker, but the "
        "cluster has none; set gpus_per_worker: 0 or use a cluster with GPUs"
    )
    study = tmp_path / "results" / "nogpu"
    assert (study / "spec.yaml").is_file()  # the driver got as far as the store
    assert not any((study / "trials").glob("*")) and not (study / "tune").exists()
