"""The spec reference: rendered from the models, checked in as docs/SPEC.md, printed by
``mtlstudy spec``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, Field, create_model

from study.cli import main
from study.spec import (
    ConstraintSpec,
    DatasetSpec,
    DeepSpeedSpec,
    MetricsSpec,
    ObjectiveSpec,
    OptimizerSpec,
    PartSpec,
    SamplerSpec,
    SchedulerSpec,
    ScheduleSpec,
    StageSpec,
    StudySpec,
    spec_markdown,
)
from study.spec._reference import COMMAND, _render

ROOT = Path(__file__).resolve().parents[3]
SPEC_MD = ROOT / "docs" / "SPEC.md"

#: Listed by hand, not found by the renderer's own walk, so a model it skips fails here.
MODELS = (
    StudySpec,
    DatasetSpec,
    PartSpec,
    MetricsSpec,
    ObjectiveSpec,
    ConstraintSpec,
    SamplerSpec,
    SchedulerSpec,
    StageSpec,
    DeepSpeedSpec,
    OptimizerSpec,
    ScheduleSpec,
)


def _sections(markdown: str) -> dict[str, str]:
    return {part.split("\n", 1)[0]: part for part in markdown.split("\n## ")[1:]}


def test_checked_in_reference_is_current() -> None:
    assert SPEC_MD.read_text(encoding="utf-8") == spec_markdown(), (
        f"docs/SPEC.md is stale; regenerate it with `{COMMAND}`"
    )


def test_reference_names_its_own_command() -> None:
    assert COMMAND in spec_markdown().splitlines()[0]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_every_field_of_every_model_has_a_row(model: type[BaseModel]) -> None:
    section = _sections(spec_markdown()).get(model.__name__)
    assert section is not None, f"no section for {model.__name__}"
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == list(model.model_fields)


def test_each_model_is_rendered_once_root_first() -> None:
    headings = [h for h in spec_markdown().splitlines() if h.startswith("## ")]
    assert headings[0] == "## StudySpec"
    assert sorted(headings) == sorted(f"## {m.__name__}" for m in MODELS)


def _toy(default: int, **bounds: int) -> type[BaseModel]:
    return create_model(
        "Toy",
        __module__=__name__,
        size=(int, Field(default, description="how big", **bounds)),
    )


def test_defaults_and_constraints_are_read_from_the_field() -> None:
    small = _render(_toy(3, ge=1), home=__name__)
    large = _render(_toy(7, gt=2, le=9), home=__name__)
    assert "| `size` | int ≥ 1 | `3` | how big |" in small
    assert "| `size` | int > 2, ≤ 9 | `7` | how big |" in large


class _Inner(BaseModel):
    """Something nested."""

    mode: Literal["min", "max"] | None = Field(None, description="which way")


class _Outer(BaseModel):
    names: tuple[str, ...] = Field(min_length=2, description="at least two")
    inner: _Inner | None = Field(None, description="the nested part")
    kept: _Inner = Field(_Inner(), description="the same model again")


def test_nested_models_are_linked_and_expanded_once() -> None:
    markdown = _render(_Outer, home=__name__)
    assert "| `names` | list of str (at least 2) | required | at least two |" in markdown
    assert "| `inner` | [_Inner](#_inner) or null | `null` | the nested part |" in markdown
    assert "| `kept` | [_Inner](#_inner) | its defaults |" in markdown
    assert markdown.count("## _Inner") == 1
    assert "| `mode` | `min` / `max` or null | `null` | which way |" in markdown
    assert "In `inner` of [_Outer](#_outer), `kept` of [_Outer](#_outer)." in markdown


def test_models_from_elsewhere_are_named_not_expanded() -> None:
    markdown = _render(_Outer, home="somewhere.else")
    assert "`_Inner` or null" in markdown and "## _Inner" not in markdown


def test_a_field_without_a_description_is_refused() -> None:
    bare = create_model("Bare", __module__=__name__, size=(int, 1))
    with pytest.raises(ValueError, match="Bare.size has no description"):
        _render(bare, home=__name__)


def test_cli_prints_the_reference() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "study.cli", "spec", "--markdown"],
        capture_output=True,
        text=True,
        encoding="utf-8",
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == spec_markdown()


def test_cli_prints_the_same_without_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["spec"]) == 0
    assert capsys.readouterr().out == spec_markdown()
