"""``import mtlstudy``: one import name for notebooks, lazy, re-exporting the public API."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import mtlstudy
from models import balancing, create_model
from study.analysis import Plot, table
from study.store import load_trials


def _modules_after(code: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", f"import sys\n{code}\nprint(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return {name.split(".")[0] for name in done.stdout.split()}


def test_import_mtlstudy_imports_no_torch_nor_pandas() -> None:
    assert {"torch", "pandas", "numpy"} & _modules_after("import mtlstudy") == set()
    assert "torch" not in _modules_after("import mtlstudy\nmtlstudy.load_trials")
    assert "torch" in _modules_after("import mtlstudy\nmtlstudy.create_model")


def test_the_names_are_the_projects(store: Path) -> None:
    assert mtlstudy.load_trials is load_trials and mtlstudy.table is table
    assert mtlstudy.create_model is create_model and mtlstudy.balancing is balancing
    assert set(mtlstudy.__all__) <= set(dir(mtlstudy))
    with pytest.raises(AttributeError, match="no attribute 'tabel'"):
        mtlstudy.tabel  # noqa: B018
    assert mtlstudy.table(store, "markdown").startswith("| method | architecture | seeds |")
    drawn = mtlstudy.plot(store, "cd")
    assert isinstance(drawn, Plot) and len(drawn.data) == 3
