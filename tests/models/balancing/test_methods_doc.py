"""docs/METHODS.md is `mtlstudy methods --markdown`, and names every method it lists."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from models import balancing
from study.cli import main

METHODS_MD = Path(__file__).resolve().parents[3] / "docs" / "METHODS.md"
COMMAND = "PYTHONPATH=$PWD python -m study.cli methods --markdown > docs/METHODS.md"


def _cli(*args: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["methods", *args]) == 0
    return out.getvalue()


def test_methods_md_is_the_generated_table() -> None:
    generated = _cli("--markdown")
    assert generated == balancing.methods_markdown()
    assert METHODS_MD.read_text() == generated, f"docs/METHODS.md is stale; run `{COMMAND}`"


def test_every_listed_method_has_a_row_with_its_conventions() -> None:
    listed = [line.split()[0] for line in _cli().splitlines()[1:] if line[:1].strip()]
    assert listed == balancing.list_methods()
    text = METHODS_MD.read_text()
    for name in listed:
        assert balancing.describe(name).conventions, name
        assert f"| `{name}` | {balancing.paper(name)} |" in text
    for name in ("fairgrad", "config", "gradvac", "modo", "sdmgrad", "stch", "mean"):
        assert name in listed
    assert "beta_sigma 0.5 (LibMTL: 0)" in text
