"""A real two-objective study over two architectures with repeats and a constraint: the
store groups the repeats, flags the front, records feasibility, and Optuna's journal holds
one trial per configuration with the mean of its repeats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest

from study.analysis import pareto_mask
from study.run import journal_storage, run_study
from study.spec import load_spec
from study.store import load_trials

SPEC = """
name: mo
seed: 4
dataset: {{image_size: 32, train_samples: 16, val_samples: 8}}
tasks: [semseg, depth]
architecture: hard_sharing
architectures:
  hard_sharing: {{backbone: regnetx_002}}
  rcm_resnet: {{variant: rc}}
search_space: cross_architecture
methods: [ew, dwa]
objectives: [{{metric: val_loss}}, {{metric: gflops}}]
constraints: [{{metric: params, max: 3.0e+7}}]
warm_start: true
trials: 2
repeats: 2
concurrency: 2
epochs: 1
batch_size: 8
scheduler: {{name: fifo}}
baselines: none
results: {results}
"""


@pytest.mark.slow  # a study with repeats on a local Ray
def test_two_objective_study_with_repeats(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC.format(results=tmp_path))
    spec, space = load_spec(path)
    outcome = run_study(spec, space, log=lambda line: None)
    assert outcome.errors == 0 and outcome.trials == 4
    trials = load_trials(tmp_path / "mo").sort_values(["config_id", "repeat"])
    assert len(trials) == 4 and (trials["status"] == "completed").all()
    # Warm start: ew at its defaults on each architecture, two seeds each.
    groups = trials.groupby("config_id", sort=False)
    assert groups.size().tolist() == [2, 2]
    for _, group in groups:
        assert group["repeat"].tolist() == [0, 1]
        assert group["seed"].tolist() == [4, 5]
        assert group["method"].nunique() == 1 and group["architecture"].nunique() == 1
        assert group["gflops"].nunique() == 1  # the same network, other seeds
        assert group["val_loss"].nunique() == 2  # …that trained differently
    assert set(trials["method"]) == {"ew"}
    assert set(trials["architecture"]) == {"hard_sharing", "rcm_resnet"}
    assert trials["feasible"].tolist() == (trials["params"] <= 3e7).tolist()
    # The flag is the front of the configurations' means.
    means = groups[["val_loss", "gflops"]].mean()
    front = pareto_mask(means.to_numpy(), ["min", "min"])
    flagged = groups["pareto"].agg(lambda p: bool(p.iloc[0]))
    assert flagged.tolist() == front.tolist()
    assert (groups["pareto"].nunique() == 1).all()
    # Optuna saw one trial per configuration, told the mean of its repeats.
    study = optuna.load_study(study_name="multi_task", storage=journal_storage(tmp_path, spec.name))
    done = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    assert len(done) == 2
    assert np.allclose(sorted(t.values for t in done), sorted(means.to_numpy().tolist()))
    assert all(list(t.constraints) == ["params <= 3e+07"] for t in done)
