"""A study on a real multi-node Ray cluster (one machine) survives losing a worker node."""

import subprocess
import sys
import time
from pathlib import Path

import pytest
from ray.cluster_utils import Cluster

from study.store import load_trials

SPEC = """
name: nodes
seed: 4
dataset: {{image_size: 32, train_samples: 256, val_samples: 16}}
tasks: [semseg, depth]
model: {{backbone: regnetx_002}}
methods: [ew]
trials: 2
concurrency: 2
cpus_per_trial: 1
max_failures: 2
epochs: 4
batch_size: 16
scheduler: {{name: fifo}}
baselines: none
results: {results}
"""


def _rows(study: Path) -> list[dict]:
    try:
        return load_trials(study).to_dict("records")
    except (FileNotFoundError, ValueError):
        return []


@pytest.mark.slow
def test_a_trial_whose_node_dies_resumes_on_another(tmp_path: Path) -> None:
    # A head with no CPU and two one-CPU workers: each trial runs on a worker node.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.format(results=tmp_path / "results"))
    study = tmp_path / "results" / "nodes"
    try:
        driver = subprocess.Popen(
            [sys.executable, "-m", "study.cli", "run", str(spec), "--address", cluster.address],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            rows = _rows(study)
            if len(rows) == 2 and all(r["status"] == "running" and r["epochs"] >= 1 for r in rows):
                break
            assert driver.poll() is None, driver.stdout.read()
            time.sleep(0.2)
        else:
            pytest.fail("the trials never both reported")
        cluster.remove_node(workers[0])  # one of the two running trials loses its node
        out, _ = driver.communicate(timeout=600)
        assert driver.returncode == 0, out
    finally:
        cluster.shutdown()
    trials = load_trials(study)
    assert len(trials) == 2 and trials["trial_id"].is_unique
    assert set(trials["status"]) == {"completed"} and set(trials["epochs"]) == {4}
    # The trial on the lost node went on from a checkpoint on the other node, not epoch 0.
    assert sorted(trials["restored_from_epoch"])[0] == 0
    assert sorted(trials["restored_from_epoch"])[1] >= 1
