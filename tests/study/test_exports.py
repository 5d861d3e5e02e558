"""Lazily exported packages: every declared name resolves, and nothing loads early."""

import subprocess
import sys

import pytest

import study.analysis
import study.run


@pytest.mark.parametrize("package", [study.run, study.analysis])
def test_every_declared_name_resolves(package: object) -> None:
    names = package.__all__
    assert names and names == sorted(set(names))
    for name in names:
        assert getattr(package, name) is not None
    with pytest.raises(AttributeError, match="has no attribute 'nothing_here'"):
        package.nothing_here  # noqa: B018


def test_a_trial_worker_imports_neither_the_tuner_nor_the_plots() -> None:
    code = (
        "import sys; from study.run import TrialRunner; "
        "print(sorted(m for m in sys.modules if m.startswith('study.') "
        "and ('_tuner' in m or 'analysis' in m or m == 'seaborn')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
