"""The seed papers' specs under study/specs validate against synthesized folders in each
dataset's real layout, at their roots relative to the spec."""

import shutil
import time
from pathlib import Path

import pytest
import timm.models._builder as timm_builder

from study.cli import _demo_spec
from study.data import synthesize
from study.spec import load_spec

SPECS = _demo_spec().parent

#: Each seed spec: the formats it reads, the weights it starts from, and its recipe.
SEEDS = {
    "efficientmtl_pascal": (
        {"pascal"},
        "timm/vit_base_patch16_224.augreg2_in21k_ft_in1k",
        ("adamw", "cosine"),
    ),
    "rcm_pascal": ({"pascal"}, "timm/resnet18.tv_in1k", ("sgd", "poly")),
    "rcm_nyud": ({"nyud"}, "timm/resnet18.tv_in1k", ("sgd", "poly")),
    "amtl_vmm_mix": (
        {"voc", "nyud"},
        "timm/tf_efficientnetv2_s.in21k_ft_in1k",
        ("adamw", "constant"),
    ),
}


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_seed_spec_validates_against_synthesized_roots(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    formats, weights, (optimizer, schedule) = SEEDS[name]
    for fmt in formats:
        synthesize(tmp_path / "data" / fmt, fmt, train=2, val=1, image_size=32)
    spec_path = tmp_path / f"{name}.yaml"
    shutil.copy(SPECS / f"{name}.yaml", spec_path)
    # No weights can be fetched here: record which timm would load instead.
    asked: list[str] = []
    monkeypatch.setattr(
        timm_builder,
        "load_pretrained",
        lambda model, pretrained_cfg=None, **_: asked.append(pretrained_cfg["hf_hub_id"]),
    )

    started = time.perf_counter()
    spec, space = load_spec(spec_path)
    seconds = time.perf_counter() - started

    assert asked and set(asked) == {weights}
    assert (spec.optimizer.name, spec.schedule.name) == (optimizer, schedule)
    roots = (
        [spec.dataset.root] if spec.dataset.parts is None else [p.root for p in spec.dataset.parts]
    )
    assert sorted(Path(str(r)).name for r in roots) == sorted(formats)
    assert all(Path(str(r)).is_dir() for r in roots)
    assert space.optim["lr"].default > 0
    assert seconds < 60, f"{name} took {seconds:.0f} s to validate"


def test_seed_specs_name_their_roots_as_folders_to_fill_in() -> None:
    for name in SEEDS:
        text = (SPECS / f"{name}.yaml").read_text()
        assert "root: data/" in text and "Fill in" in text
