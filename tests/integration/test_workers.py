"""A trial of two data-parallel workers: Ray Train's TorchTrainer inside the Tune trial."""

from pathlib import Path

import pytest

from study.run import run_study
from study.spec import load_spec
from study.store import load_history, load_trials

SPEC = """
name: workers
seed: 2
dataset: {{image_size: 32, train_samples: 20, val_samples: 8}}
tasks: [semseg, depth]
model: {{backbone: regnetx_002}}
methods: [ew, mgda]
trials: 1
concurrency: 1
workers_per_trial: 2
cpus_per_trial: 1
epochs: 2
batch_size: 4
scheduler: {{name: fifo}}
baselines: none
results: {results}
"""


@pytest.mark.slow  # a Ray Train group of two
def test_a_two_worker_trial_trains_on_both_shards(tmp_path: Path) -> None:
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(SPEC.format(results=tmp_path / "results"))
    spec, space = load_spec(spec_path)
    assert run_study(spec, space, log=lambda line: None).errors == 0
    (row,) = load_trials(tmp_path / "results" / "workers").to_dict("records")
    assert row["status"] == "completed" and row["epochs"] == 2
    # Each worker saw half of each global batch of 8 (the last 4 of 20 make no full global
    # batch, so no worker trains on them); the counts are summed over both workers.
    assert row["labels.semseg"] == row["labels.depth"] == 16
    history = load_history(tmp_path / "results" / "workers", where="metric == 'miou'")
    assert sorted(history["epoch"]) == [1, 2]
    assert (tmp_path / "results" / "workers" / "train" / row["trial_id"]).is_dir()
