"""Ctrl-C or SIGTERM stops a study gracefully: a non-zero status, one line that says how to
resume, and an experiment that ``--resume`` can go on with, and that it refuses to go on
with once a file the study did not sign is planted in it."""

import os
import pickle
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
    experiment = results / "stopped" / "tune" / "multi_task"
    assert tune.Tuner.can_restore(str(experiment))
    if signum == signal.SIGINT:
        _planted_state_is_refused(spec, experiment, tmp_path / "marker")


class _Payload:
    """Unpickled, it writes a marker file: what a planted searcher state would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def _planted_state_is_refused(spec: Path, experiment: Path, marker: Path) -> None:
    # Tune restores the searcher from the newest state file it finds.
    planted = experiment / "searcher-state-2099-01-01_00-00-00.pkl"
    planted.write_bytes(pickle.dumps(_Payload(marker)))
    run = _mtlstudy("run", str(spec), "--resume")
    out, err = run.communicate(timeout=180)
    assert run.returncode == 2, err[-2000:]
    assert err.count("\n") == 1 and "searcher-state-2099-01-01_00-00-00.pkl" in err, err
    assert "carries no signature of this study" in err
    assert not marker.exists()


def test_resume_with_nothing_to_resume_is_refused(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.format(results=tmp_path / "results"))
    run = _mtlstudy("run", str(spec), "--resume")
    out, err = run.communicate(timeout=120)
    assert run.returncode == 2
    assert err.startswith("mtlstudy: error: nothing to resume:") and err.count("\n") == 1
    assert "--allow-fresh" in err
    assert not (tmp_path / "results" / "stopped" / "trials").exists()
