from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from study.data import DatasetError
from study.data._synthetic import SyntheticScenes
from study.data.pascal import (
    NUM_CLASSES,
    TASKS,
    PASCALContext,
    describe,
    edges_from_labels,
    write_pascal,
)

H, W = 4, 6


# --------------------------------------------------------------------------- fixtures


def _struct(fields: list[str], rows: list[list[object]]) -> np.ndarray:
    """A 1×N MATLAB struct array as scipy.io writes and reads it."""
    array = np.empty((1, len(rows)), dtype=[(f, object) for f in fields])
    for j, row in enumerate(rows):
        for f, value in zip(fields, row, strict=True):
            array[0, j][f] = value
    return array


def _mask(*cells: tuple[int, int]) -> np.ndarray:
    mask = np.zeros((H, W), dtype=np.uint8)
    for r, c in cells:
        mask[r, c] = 1
    return mask


def _parts_anno(objects: list[tuple[str, int, np.ndarray, list[tuple[str, np.ndarray]]]]) -> dict:
    """Pascal-Part ``anno``: (imname, objects(class, class_ind, mask, parts(part_name, mask)))."""
    rows = []
    for cls, ind, mask, parts in objects:
        part_array = (
            _struct(["part_name", "mask"], [[name, m] for name, m in parts])
            if parts
            else np.zeros((0, 0))
        )
        rows.append([cls, np.array([[ind]], dtype=np.uint8), mask, part_array])
    objs = _struct(["class", "class_ind", "mask", "parts"], rows)
    return {"anno": _struct(["imname", "objects"], [["x", objs]])}


def _png(path: Path, array: np.ndarray, mode: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)


def _mat(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), content)


SEMSEG = np.array(
    [[0, 0, 5, 5, 255, 20], [0, 1, 1, 5, 255, 20], [0, 1, 15, 15, 0, 0], [0, 0, 15, 15, 0, 0]],
    dtype=np.uint8,
)
LABEL_MAP = np.array([[1] * 3 + [7] * 3] * H, dtype=np.uint16)  # one vertical boundary
NORMALS_RAW = np.zeros((H, W, 3), dtype=np.uint8)
NORMALS_RAW[0, 0] = (255, 128, 128)
NORMALS_RAW[0, 1] = (128, 128, 255)
NORMALS_RAW[1, 0] = (30, 200, 90)
NORMALS_RAW[1, 1] = (0, 0, 1)  # not all zero: valid
SALIENCY_RAW = np.array([[0, 127, 128, 255, 200, 10]] * H, dtype=np.uint8)


def _person_anno() -> dict:
    person = _mask(*[(r, c) for r in range(4) for c in range(3)])
    return _parts_anno(
        [
            (
                "person",
                15,
                person,
                [
                    ("hair", _mask((0, 0))),
                    ("nose", _mask((0, 1))),
                    ("neck", _mask((1, 0))),
                    ("luarm", _mask((1, 1))),
                    ("rlarm", _mask((1, 2))),
                    ("lhand", _mask((2, 0))),
                    ("ruleg", _mask((2, 1))),
                    ("lfoot", _mask((3, 0))),
                    ("llleg", _mask((3, 1))),
                ],
            ),
            ("dog", 12, _mask((0, 5)), [("head", _mask((0, 5)))]),  # not a person: ignored
            ("person", 15, _mask((3, 5)), []),  # a person without parts: no parts painted
        ]
    )


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    """Three images: 'p' with a person, 'd' with a dog only, 'n' with no part file."""
    names = {"train": ["p", "d"], "val": ["n"]}
    splits = tmp_path / "ImageSets" / "Context"
    splits.mkdir(parents=True)
    for split, ids in names.items():
        (splits / f"{split}.txt").write_text("\n".join(ids) + "\n\n")
    for name in ("p", "d", "n"):
        image = np.full((H, W, 3), 128, dtype=np.uint8)
        _png(tmp_path / "JPEGImages" / f"{name}.jpg", image, "RGB")
        _png(tmp_path / "semseg" / "pascal-context" / f"{name}.png", SEMSEG, "L")
        _mat(tmp_path / "pascal-context" / "trainval" / f"{name}.mat", {"LabelMap": LABEL_MAP})
        _png(tmp_path / "normals_distill" / f"{name}.png", NORMALS_RAW, "RGB")
        _png(tmp_path / "sal_distill" / f"{name}.png", SALIENCY_RAW, "L")
    _mat(tmp_path / "human_parts" / "p.mat", _person_anno())
    _mat(tmp_path / "human_parts" / "d.mat", _parts_anno([("dog", 12, _mask((0, 0)), [])]))
    return tmp_path


# --------------------------------------------------------------------------- decoding


def test_decodes_every_task_exactly(root: Path) -> None:
    data = PASCALContext(root, "train", TASKS)
    assert len(data) == 2 and data.names == ["p", "d"]
    sample = data[0]
    assert sample["name"] == "p"
    assert sample["image"].shape == (3, H, W) and sample["image"].dtype == torch.float32
    assert sample["labelled"] == dict.fromkeys(TASKS, True)
    t = sample["targets"]

    assert t["semseg"].dtype == torch.int64
    assert torch.equal(t["semseg"], torch.from_numpy(SEMSEG.astype(np.int64)))  # 255 kept

    # Labels 1 | 7 between columns 2 and 3: the Laplacian marks both columns, thinning
    # keeps the left one (its top pixel goes too, as with skimage's thin).
    expected_edges = np.zeros((H, W), dtype=np.float32)
    expected_edges[1:, 2] = 1
    assert t["edges"].shape == (1, H, W) and t["edges"].dtype == torch.float32
    assert torch.equal(t["edges"][0], torch.from_numpy(expected_edges))

    expected_parts = np.array(
        [[1, 1, 0, 0, 0, 0], [2, 3, 4, 0, 0, 0], [4, 5, 0, 0, 0, 0], [6, 6, 0, 0, 0, 0]]
    )
    assert t["human_parts"].dtype == torch.int64
    assert torch.equal(t["human_parts"], torch.from_numpy(expected_parts))

    n = t["normals"]
    assert n.shape == (3, H, W) and n.dtype == torch.float32
    for r, c in ((0, 0), (0, 1), (1, 0), (1, 1)):
        v = 2.0 * NORMALS_RAW[r, c].astype(np.float64) / 255.0 - 1.0
        np.testing.assert_allclose(n[:, r, c].numpy(), v / np.linalg.norm(v), atol=1e-6)
    assert (n[:, 2:] == 0).all() and (n[:, :, 2:] == 0).all()  # raw (0, 0, 0): invalid

    expected_sal = (SALIENCY_RAW.astype(np.float64) / 255.0 > 0.5).astype(np.float32)
    assert expected_sal[0].tolist() == [0, 0, 1, 1, 1, 0]
    assert t["saliency"].shape == (1, H, W)
    assert torch.equal(t["saliency"][0], torch.from_numpy(expected_sal))


def test_images_without_a_person_have_ignored_unlabelled_parts(root: Path) -> None:
    dog = PASCALContext(root, "train", ["human_parts", "semseg"])[1]
    no_file = PASCALContext(root, "val", ["human_parts"])[0]
    for sample in (dog, no_file):
        assert sample["labelled"]["human_parts"] is False
        assert (sample["targets"]["human_parts"] == 255).all()
        assert sample["targets"]["human_parts"].shape == (H, W)
    assert dog["labelled"]["semseg"] is True


def test_transform_is_applied(root: Path) -> None:
    def mark(sample):  # noqa: ANN001, ANN202
        return {**sample, "name": sample["name"] + "!"}

    assert PASCALContext(root, "val", ["semseg"], transform=mark)[0]["name"] == "n!"


def test_edges_from_labels_thin_one_side() -> None:
    labels = np.zeros((5, 5), dtype=np.int64)
    labels[3:] = 2  # horizontal boundary between rows 2 and 3
    edges = edges_from_labels(labels)
    assert edges.dtype == np.float32 and set(np.unique(edges)) <= {0.0, 1.0}
    # Rows 2 and 3 both differ from a neighbour; thinning keeps row 3 (its end pixel goes).
    expected = np.zeros((5, 5), dtype=np.float32)
    expected[3, :4] = 1
    np.testing.assert_array_equal(edges, expected)
    assert edges_from_labels(np.ones((5, 5))).sum() == 0


# --------------------------------------------------------------------------- errors


def test_errors_name_the_path(root: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    missing = tmp_path_factory.mktemp("x") / "nowhere"
    with pytest.raises(DatasetError, match=str(missing)):
        PASCALContext(missing, "train", ["semseg"])
    with pytest.raises(ValueError, match="unknown task"):
        PASCALContext(root, "train", ["depth"])

    (root / "ImageSets" / "Context" / "val.txt").unlink()
    with pytest.raises(DatasetError, match=r"val\.txt"):
        PASCALContext(root, "val", ["semseg"])

    shutil.rmtree(root / "sal_distill")
    with pytest.raises(DatasetError, match="sal_distill"):
        PASCALContext(root, "train", ["saliency"])

    (root / "normals_distill" / "p.png").unlink()
    with pytest.raises(DatasetError, match=r"normals_distill.p\.png"):
        PASCALContext(root, "train", ["normals"])[0]

    (root / "semseg" / "pascal-context" / "p.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"pascal-context.p\.png"):
        PASCALContext(root, "train", ["semseg"])[0]

    _mat(root / "pascal-context" / "trainval" / "p.mat", {"Other": LABEL_MAP})
    with pytest.raises(DatasetError, match=r"trainval.p\.mat.*LabelMap"):
        PASCALContext(root, "train", ["edges"])[0]

    (root / "human_parts" / "p.mat").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match=r"human_parts.p\.mat"):
        PASCALContext(root, "train", ["human_parts"])[0]

    (root / "JPEGImages" / "d.jpg").unlink()
    with pytest.raises(DatasetError, match=r"d\.jpg"):
        PASCALContext(root, "train", ["edges"])[1]


def test_semseg_values_out_of_range_are_rejected(root: Path) -> None:
    bad = SEMSEG.copy()
    bad[0, 0] = 21
    _png(root / "semseg" / "pascal-context" / "p.png", bad, "L")
    with pytest.raises(DatasetError, match="21"):
        PASCALContext(root, "train", ["semseg"])[0]


def test_describe_counts_files_per_split(root: Path) -> None:
    (root / "normals_distill" / "d.png").unlink()
    counts = describe(root)
    assert counts == {
        "train": {
            "images": 2,
            "semseg": 2,
            "edges": 2,
            "human_parts": 2,
            "normals": 1,
            "saliency": 2,
        },
        "val": {
            "images": 1,
            "semseg": 1,
            "edges": 1,
            "human_parts": 0,
            "normals": 1,
            "saliency": 1,
        },
    }


# --------------------------------------------------------------------------- round trip


def test_write_pascal_round_trip(tmp_path: Path) -> None:
    synth = SyntheticScenes(
        3, ["semseg", "normals", "edges", "saliency"], image_size=16, num_classes=5, seed=0
    )
    scenes = [(f"2008_{i:06d}", synth.scene(i)) for i in range(3)]
    write_pascal(tmp_path, {"train": scenes[:2], "val": scenes[2:]})
    assert describe(tmp_path)["train"] == {
        "images": 2,
        "semseg": 2,
        "edges": 2,
        "human_parts": 0,
        "normals": 2,
        "saliency": 2,
    }
    train = PASCALContext(tmp_path, "train", TASKS)
    val = PASCALContext(tmp_path, "val", TASKS)
    assert len(train) == 2 and len(val) == 1
    for sample, (name, scene) in zip([train[0], train[1], val[0]], scenes, strict=True):
        t = sample["targets"]
        assert sample["name"] == name
        assert (
            sample["image"] - torch.from_numpy(scene.image.transpose(2, 0, 1))
        ).abs().mean() < 0.05
        assert torch.equal(t["semseg"], torch.from_numpy(scene.semseg))
        assert int(t["semseg"].max()) < NUM_CLASSES
        np.testing.assert_allclose(t["normals"].numpy(), scene.normals, atol=0.01)
        assert torch.equal(t["saliency"][0], torch.from_numpy(scene.saliency))
        assert sample["labelled"]["human_parts"] is False
        assert (t["human_parts"] == 255).all()
        # Edges: the thinned boundaries of the (class, instance) regions.
        regions = scene.semseg + NUM_CLASSES * scene.instances
        assert torch.equal(t["edges"][0], torch.from_numpy(edges_from_labels(regions)))
        edges = t["edges"][0].numpy() > 0
        assert edges.any()
        change = np.zeros_like(edges)
        change[:-1] |= np.diff(regions, axis=0) != 0
        change[1:] |= np.diff(regions, axis=0) != 0
        change[:, :-1] |= np.diff(regions, axis=1) != 0
        change[:, 1:] |= np.diff(regions, axis=1) != 0
        assert not (edges & ~change).any()  # every edge pixel touches a region change


def test_write_pascal_rejects_too_many_classes(tmp_path: Path) -> None:
    scene = SyntheticScenes(1, ["semseg"], image_size=16, num_classes=30, seed=3).scene(0)
    object.__setattr__(scene, "semseg", np.full_like(scene.semseg, 25))
    with pytest.raises(ValueError, match="0..20"):
        write_pascal(tmp_path, {"train": [("a", scene)]})
