from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from study.data import DatasetError
from study.data._synthetic import SyntheticScenes
from study.data.voc import CLASSES, NUM_CLASSES, TASKS, VOCDetection, describe, write_voc

H, W = 20, 30

# Image 'a': a dog, a difficult person and a car; image 'b': no objects.
XML_A = """<annotation>
  <filename>a.jpg</filename>
  <size><width>30</width><height>20</height><depth>3</depth></size>
  <object>
    <name>dog</name>
    <pose>Left</pose>
    <truncated>0</truncated>
    <difficult>0</difficult>
    <bndbox><xmin>1</xmin><ymin>2</ymin><xmax>10</xmax><ymax>12</ymax></bndbox>
  </object>
  <object>
    <name>person</name>
    <difficult>1</difficult>
    <bndbox><xmin>5</xmin><ymin>6</ymin><xmax>30</xmax><ymax>20</ymax></bndbox>
  </object>
  <object>
    <name> car </name>
    <bndbox><xmin>11</xmin><ymin>3</ymin><xmax>15.5</xmax><ymax>8</ymax></bndbox>
  </object>
</annotation>
"""
XML_B = """<annotation>
  <filename>b.jpg</filename>
  <size><width>30</width><height>20</height><depth>3</depth></size>
</annotation>
"""
DOG = [0.0, 1.0, 10.0, 12.0, 11.0]
PERSON = [4.0, 5.0, 30.0, 20.0, 14.0]
CAR = [10.0, 2.0, 15.5, 8.0, 6.0]
PAD = [0.0, 0.0, 0.0, 0.0, -1.0]


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    for folder in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (tmp_path / folder).mkdir(parents=True)
    for name, xml in (("a", XML_A), ("b", XML_B)):
        image = np.full((H, W, 3), 128, dtype=np.uint8)
        Image.fromarray(image, "RGB").save(tmp_path / "JPEGImages" / f"{name}.jpg")
        (tmp_path / "Annotations" / f"{name}.xml").write_text(xml)
    splits = tmp_path / "ImageSets" / "Main"
    (splits / "train.txt").write_text("a\n\n")
    (splits / "val.txt").write_text("b\n")
    (splits / "trainval.txt").write_text("a\nb\n")
    return tmp_path


def test_constants() -> None:
    assert len(CLASSES) == 20 and CLASSES[0] == "aeroplane" and CLASSES[-1] == "tvmonitor"
    assert CLASSES.index("person") == 14
    assert NUM_CLASSES == 21
    assert TASKS == ("detection",)


def test_targets_exact_without_difficult(root: Path) -> None:
    data = VOCDetection(root, "trainval", max_objects=4)
    assert len(data) == 2
    sample = data[0]
    assert sample["name"] == "a"
    assert sample["image"].shape == (3, H, W) and sample["image"].dtype == torch.float32
    assert sample["labelled"] == {"detection": True}
    target = sample["targets"]["detection"]
    assert target.dtype == torch.float32
    assert target.tolist() == [DOG, CAR, PAD, PAD]


def test_keep_difficult(root: Path) -> None:
    target = VOCDetection(root, "train", max_objects=3, keep_difficult=True)[0]["targets"]
    assert target["detection"].tolist() == [DOG, PERSON, CAR]


def test_image_without_objects_is_all_padding(root: Path) -> None:
    sample = VOCDetection(root, "val", max_objects=2)[0]
    assert sample["labelled"] == {"detection": True}
    assert sample["targets"]["detection"].tolist() == [PAD, PAD]


def test_default_padding_and_transform(root: Path) -> None:
    seen = []

    def transform(sample):
        seen.append(sample["name"])
        return sample

    target = VOCDetection(root, "train", transform=transform)[0]["targets"]["detection"]
    assert target.shape == (64, 5)
    assert (target[2:, 4] == -1).all() and seen == ["a"]


def test_too_many_objects_is_an_error(root: Path) -> None:
    with pytest.raises(DatasetError, match=r"a\.xml has 3 objects.*max_objects=2"):
        VOCDetection(root, "train", max_objects=2, keep_difficult=True)[0]
    # Without the difficult person two objects fit.
    assert VOCDetection(root, "train", max_objects=2)[0]["targets"]["detection"].shape == (2, 5)


def test_bad_arguments(root: Path) -> None:
    with pytest.raises(ValueError, match="unknown split"):
        VOCDetection(root, "everything")
    with pytest.raises(ValueError, match="unknown task"):
        VOCDetection(root, "train", tasks=("semseg",))
    with pytest.raises(ValueError, match="string"):
        VOCDetection(root, "train", tasks="detection")


def test_missing_root_and_split(root: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetError, match=str(missing)):
        VOCDetection(missing, "train")
    with pytest.raises(DatasetError, match="test.txt"):
        VOCDetection(root, "test")


def test_missing_annotation(root: Path) -> None:
    (root / "Annotations" / "a.xml").unlink()
    with pytest.raises(DatasetError, match=r"annotation .*a\.xml not found"):
        VOCDetection(root, "train")[0]


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        ("<annotation><object><name>dog</name>", "not valid XML"),
        (XML_A.replace("<name>dog</name>", "<name>wolf</name>"), "unknown class 'wolf'"),
        (XML_A.replace("<xmax>10</xmax>", ""), "no <xmax>"),
        (XML_A.replace("<xmax>10</xmax>", "<xmax>ten</xmax>"), "not a number"),
        (XML_A.replace("<xmax>10</xmax>", "<xmax>0</xmax>"), "empty box"),
        (XML_A.replace("<difficult>1</difficult>", "<difficult>yes</difficult>"), "difficult"),
    ],
)
def test_malformed_annotation(root: Path, xml: str, message: str) -> None:
    path = root / "Annotations" / "a.xml"
    path.write_text(xml)
    with pytest.raises(DatasetError, match=message) as info:
        VOCDetection(root, "train")[0]
    assert str(path) in str(info.value)


def test_describe(root: Path) -> None:
    (root / "JPEGImages" / "b.jpg").unlink()
    assert describe(root) == {
        "train": {"images": 1, "detection": 1, "objects": 3},
        "val": {"images": 0, "detection": 1, "objects": 0},
        "trainval": {"images": 1, "detection": 2, "objects": 3},
    }
    for split in ("train", "val", "trainval"):
        (root / "ImageSets" / "Main" / f"{split}.txt").unlink()
    with pytest.raises(DatasetError, match="no split file"):
        describe(root)


def test_write_voc_round_trip(tmp_path: Path) -> None:
    source = SyntheticScenes(3, ["semseg"], image_size=32, num_classes=5, seed=0)
    scenes = [(f"s{i}", source.scene(i)) for i in range(3)]
    write_voc(tmp_path, {"train": scenes[:2], "val": scenes[2:]})
    assert describe(tmp_path) == {
        split: {"images": n, "detection": n, "objects": sum(len(s.labels) for _, s in part)}
        for split, n, part in (("train", 2, scenes[:2]), ("val", 1, scenes[2:]))
    }
    loaded = [*VOCDetection(tmp_path, "train", max_objects=8)]
    loaded += [*VOCDetection(tmp_path, "val", max_objects=8)]
    for (name, scene), sample in zip(scenes, loaded, strict=True):
        assert sample["name"] == name
        assert sample["image"].shape == (3, 32, 32)
        image = torch.from_numpy(scene.image.transpose(2, 0, 1))
        assert (sample["image"] - image).abs().mean() < 0.05  # JPEG q95 on a noisy 32 px image
        target = sample["targets"]["detection"]
        n = len(scene.labels)
        assert n > 0
        assert np.abs(target[:n, :4].numpy() - scene.boxes).max() <= 1.0
        assert target[:n, 4].tolist() == (scene.labels - 1).tolist()
        assert (target[n:, 4] == -1).all()


def test_write_voc_rejects_bad_input(tmp_path: Path) -> None:
    scene = SyntheticScenes(1, ["semseg"], image_size=32, num_classes=5, seed=0).scene(0)
    with pytest.raises(ValueError, match="unknown split"):
        write_voc(tmp_path, {"holdout": [("x", scene)]})
    bad = type(scene)(**{**scene.__dict__, "labels": np.zeros_like(scene.labels)})
    with pytest.raises(ValueError, match="labels must lie in 1..20"):
        write_voc(tmp_path, {"train": [("x", bad)]})
