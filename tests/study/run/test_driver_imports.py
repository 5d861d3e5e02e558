"""A study's driver imports torch (its tasks and setups are torch objects) but not the
trials' heavier stack: architectures, their ops and DeepSpeed load in the trial processes."""

from __future__ import annotations

import subprocess
import sys

#: timm, torchvision (which imports torch._dynamo) and DeepSpeed: seconds and hundreds of
#: megabytes each in a process that never builds a model.
TRIAL_ONLY = ("timm", "torchvision", "torch._dynamo", "deepspeed")


def _loaded(statement: str) -> list[str]:
    code = (
        f"import sys; {statement}; print(' '.join(m for m in {TRIAL_ONLY!r} if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.split()


def test_the_driver_imports_no_trial_stack() -> None:
    assert _loaded("import study.run._tuner") == []


def test_the_check_sees_an_import() -> None:
    assert "torchvision" in _loaded("import models.detection")
