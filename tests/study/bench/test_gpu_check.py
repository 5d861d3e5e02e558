"""The GPU check: one line and a non-zero exit without a GPU; the trial path it drives
imports no Ray, and Optuna and SciPy only where an empty stand-in serves."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_no_gpu_is_one_line_and_fails(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("GPU_CHECK_ALLOW_CPU", None)
    done = subprocess.run(
        [str(ROOT / "scripts" / "gpu_check.sh"), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "gpu-check: no GPU visible to torch (torch.cuda.is_available() is False)"
    ]
    assert not out.exists()


def test_trial_path_without_ray_optuna_or_scipy() -> None:
    # A fresh process that acts as if the three were not installed, as on the GPU machine.
    code = f"""
import json, sys
sys.path.insert(0, {str(ROOT / "scripts")!r})
import gpu_check
guard = gpu_check.install_guard({{"ray", "optuna", "scipy"}})
from study.run import TrialRunner, TrialSetup
import study.bench.step, study.cli
print(json.dumps(guard.importers))
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    importers = json.loads(done.stdout.strip().splitlines()[-1])
    assert "ray" not in importers
    assert set(importers) <= {"scipy"}  # Optuna is imported for type checkers only
