"""Ctrl-C or SIGTERM stops a study gracefully: a non-zero status, one line that says how to
resume, and an experiment that ``--resume`` can go on with."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ray import tune

from study.store import load_trials

SPEC = """
name: stopped
seed: 5
dataset: {{image_size: 32, train_samples: 128, val_samples: 8}}
tasks: [semseg, depth]
model: {{backbone: regnetx_002}}
methods: [ew]
trials: 3
concurrency: 1
epochs: 6
batch_size: 8
scheduler: {{name: fifo}}
baselines: none
results: {results}
"""


def _mtlstudy(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "study.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _started(results: Path, deadline: float) -> bool:
    while time.monotonic() < deadline:
        try:
            if len(load_trials(results / "stopped")):
                return True
        except (FileNotFoundError, ValueError):
            pass
        time.sleep(0.5)
    return False


@pytest.mark.parametrize(
    "signum",
    [signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)],
    ids=["SIGINT", "SIGTERM"],
)
def test_a_stopped_study_says_how_to_resume(tmp_path: Path, signum: int) -> None:
    results = tmp_path / "results"
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.format(results=results))
    run = _mtlstudy("run", str(spec))
    try:
        assert _started(results, time.monotonic() + 240), "no trial reported"
        os.kill(run.pid, signum)
        out, err = run.communicate(timeout=180)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert run.returncode == 128 + signum, err[-2000:]
    name = signal.Signals(signum).name
    assert f"mtlstudy: interrupted by {name}; finished trials are kept." in err
    assert f"Resume with: mtlstudy run {spec} --resume" in err
    assert "Tuner.restore" not in err + out  # Tune's own advice is for its API
    assert tune.Tuner.can_restore(str(results / "stopped" / "tune" / "multi_task"))


def test_resume_with_nothing_to_resume_is_refused(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.format(results=tmp_path / "results"))
    run = _mtlstudy("run", str(spec), "--resume")
    out, err = run.communicate(timeout=120)
    assert run.returncode == 2
    assert err.startswith("mtlstudy: error: nothing to resume:") and err.count("\n") == 1
    assert "--allow-fresh" in err
    assert not (tmp_path / "results" / "stopped" / "trials").exists()
