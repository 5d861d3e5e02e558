"""Validation at a dataset's own resolution, as the papers score it: NYUD as stored,
PASCAL-Context padded to 512x512 with the padding unscored; training keeps its crop."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from search_spaces import load_space
from study.data import SyntheticScenes, get_format, synthesize
from study.run import TrialRunner, TrialSetup, trial_splits
from study.spec import DatasetSpec, SpecError, StudySpec, load_spec

NYUD_TASKS = ("semseg", "depth", "normals", "edges")


def _enlarged(scene: object, rows: int, cols: int) -> object:
    """A scene ``rows``×``cols`` times as large, every pixel repeated (boxes unused here)."""

    def grow(array: np.ndarray) -> np.ndarray:
        return np.repeat(np.repeat(array, rows, 0), cols, 1)  # (H, W) or (H, W, 3)

    return replace(
        scene,  # type: ignore[type-var]
        image=grow(scene.image),  # type: ignore[attr-defined]
        semseg=grow(scene.semseg),  # type: ignore[attr-defined]
        depth=grow(scene.depth),  # type: ignore[attr-defined]
        normals=np.repeat(np.repeat(scene.normals, rows, 1), cols, 2),  # type: ignore[attr-defined]
        edges=grow(scene.edges),  # type: ignore[attr-defined]
    )


@pytest.fixture(scope="module")
def nyud_vga(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An NYUD-MT folder whose validation images are 480x640, as NYU Depth v2's are."""
    root = tmp_path_factory.mktemp("native") / "nyud"
    splits = {}
    for split, count in (("train", 4), ("val", 2)):
        scenes = SyntheticScenes(count, NYUD_TASKS, split=split, image_size=16, num_classes=40)
        big = split == "val"
        splits[split] = [
            (f"{split}_{i}", _enlarged(scenes.scene(i), 30, 40) if big else scenes.scene(i))
            for i in range(count)
        ]
    root.mkdir()
    get_format("nyud").write_scenes(root, splits)
    return root


def _nyud(root: Path, **fields: str) -> DatasetSpec:
    return DatasetSpec(name="nyud", root=str(root), image_size=16, num_classes=40, **fields)


def test_nyud_validates_at_its_own_resolution(nyud_vga: Path) -> None:
    train, val = trial_splits(_nyud(nyud_vga), 0, NYUD_TASKS)
    images, targets, _ = next(iter(val.batches(2, None)))
    assert images.shape == (2, 3, 480, 640)
    assert targets["semseg"].shape == (2, 480, 640) and targets["normals"].shape[-2:] == (480, 640)
    assert next(iter(train.batches(2, 0)))[0].shape[-2:] == (16, 16)  # the training crop
    _, resized = trial_splits(_nyud(nyud_vga, eval_resolution="train"), 0, NYUD_TASKS)
    assert next(iter(resized.batches(2, None)))[0].shape[-2:] == (16, 16)


def test_pascal_validates_padded_to_512_with_the_padding_unscored(tmp_path: Path) -> None:
    synthesize(tmp_path / "pascal", "pascal", train=2, val=2, image_size=24, num_classes=21)
    data = DatasetSpec(name="pascal", root=str(tmp_path / "pascal"), image_size=16, num_classes=21)
    _, val = trial_splits(data, 0, ("semseg", "normals", "saliency"))
    images, targets, _ = next(iter(val.batches(2, None)))
    assert images.shape == (2, 3, 512, 512)
    semseg = targets["semseg"]
    assert (semseg[:, 24:, :] == 255).all() and (semseg[:, :, 24:] == 255).all()
    assert (semseg[:, :24, :24] != 255).any()  # the image itself is scored
    assert (targets["normals"][:, :, 24:, :] == 0).all()  # invalid normals
    assert (targets["saliency"][:, :, 24:, :] == 255).all()


def test_a_trial_evaluates_at_the_native_size(nyud_vga: Path) -> None:
    spec = StudySpec(
        name="native",
        tasks=["semseg", "depth"],
        dataset=_nyud(nyud_vga),
        model={"backbone": "regnetx_002"},
        batch_size=2,
        epochs=1,
        baselines="none",
    )
    config = load_space("default").default_config("ew")
    config["model"]["head_channels"] = 8
    runner = TrialRunner(TrialSetup(spec=spec, tasks=tuple(spec.tasks)), config)
    seen: list[tuple[int, int]] = []
    runner.model.register_forward_hook(
        lambda _m, args, _out: seen.append(tuple(args[0].shape[-2:]))
    )
    report = runner.run_epoch()
    assert (16, 16) in seen and (480, 640) in seen  # trained on crops, scored at 480x640
    assert all(np.isfinite(report[k]) for k in ("semseg/miou", "depth/rmse", "val_loss"))
    assert torch.isfinite(torch.tensor(report["val_loss/depth"]))


VIT = """
name: vit
dataset: {{name: nyud, root: data, image_size: 32, num_classes: 40{extra}}}
tasks: [semseg, depth]
architecture: vit_sharing
model: {{patch_size: 8, depth: 2, decoder_width: 16, image_size: 32}}
methods: [ew]
search_space: vit_sharing
stages: [{{task: semseg, step: base}}, {{task: depth, step: gates}}]
scheduler: {{name: fifo}}
baselines: none
"""


@pytest.mark.parametrize("extra", ["", ", eval_resolution: native"])
def test_a_model_of_one_input_size_is_refused_native_evaluation(tmp_path: Path, extra: str) -> None:
    synthesize(tmp_path / "data", "nyud", train=2, val=1, image_size=16)
    (tmp_path / "spec.yaml").write_text(VIT.format(extra=extra))
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path / "spec.yaml")
    message = str(info.value)
    assert "eval_resolution: train" in message and "32x32" in message and "\n" not in message
    (tmp_path / "spec.yaml").write_text(VIT.format(extra=", eval_resolution: train"))
    spec, _ = load_spec(tmp_path / "spec.yaml")
    assert spec.dataset.eval_resolution == "train"
