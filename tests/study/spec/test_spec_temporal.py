"""A spec asking for the temporal penalty where it cannot apply is one line, before Ray."""

from pathlib import Path

import pytest

from study.data import synthesize
from study.spec import SpecError, load_spec

VIT = """
name: vt
tasks: [semseg, depth]
architecture: vit_sharing
search_space: vit_sharing
methods: [ew]
baselines: none
"""
MODEL = "model: {patch_size: 8, depth: 1, decoder_width: 8, temporal_l1_weight: 1.0e-4}\n"
STAGES = "stages: [{task: semseg, step: base}, {task: depth, step: gates}]\n"


def _load(tmp_path: Path, text: str) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    load_spec(path)


def _refused(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(SpecError, match="field 'model.temporal_l1_weight'") as err:
        _load(tmp_path, text)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_synthetic_scenes_have_neighbouring_frames(tmp_path: Path) -> None:
    _load(tmp_path, VIT + MODEL + STAGES)


def test_nyud_needs_its_neighbours_folder(tmp_path: Path) -> None:
    synthesize(tmp_path / "plain", "nyud", train=2, val=1, image_size=16)
    synthesize(tmp_path / "video", "nyud", train=2, val=1, image_size=16, neighbours=True)
    dataset = (
        "dataset: {{name: nyud, root: {}, image_size: 16, num_classes: 40, "
        "eval_resolution: train}}\n"
    )
    _refused(tmp_path, VIT + MODEL + STAGES + dataset.format("plain"), "no neighbours/ folder")
    _load(tmp_path, VIT + MODEL + STAGES + dataset.format("video"))


def test_other_datasets_and_unstaged_studies_are_refused(tmp_path: Path) -> None:
    mix = (
        "dataset: {parts: [{tasks: [semseg], train_samples: 4, val_samples: 2},"
        " {tasks: [depth], train_samples: 4, val_samples: 2}]}\n"
    )
    _refused(tmp_path, VIT + MODEL + STAGES + mix, "a mix of parts has no neighbouring frames")
    _refused(tmp_path, VIT + MODEL, "added in staged training")
