from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from study.data import DatasetError, Sample
from study.data._synthetic import SyntheticScenes
from study.data.nyud import NUM_CLASSES, NYUD, TASKS, describe, detect_layout
from study.data.nyud_write import write_nyud

H, W = 8, 16  # two 8×8 JPEG blocks: the left one is kept all-zero where invalid normals live
SPLITS = {"train": ["a", "b"], "val": ["c"]}
NAMES = [name for names in SPLITS.values() for name in names]

# Stored labels: 0 (unlabelled), 1, 40 and a few others.
RAW_SEMSEG = np.arange(H * W, dtype=np.uint8).reshape(H, W) % 41
EXPECTED_SEMSEG = np.where(RAW_SEMSEG == 0, 255, RAW_SEMSEG.astype(np.int64) - 1)


def _smooth_normals() -> np.ndarray:
    """Unit normals (H, W, 3) varying slowly, facing the camera."""
    ys, xs = np.meshgrid(np.linspace(-0.3, 0.3, H), np.linspace(-0.3, 0.3, W), indexing="ij")
    normals = np.stack([xs, ys, -np.ones_like(xs)], axis=-1)
    return (normals / np.linalg.norm(normals, axis=-1, keepdims=True)).astype(np.float32)


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _write_common(root: Path) -> None:
    for folder in ("images", "segmentation", "depth", "normals", "edge", "gt_sets"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for split, names in SPLITS.items():
        (root / "gt_sets" / f"{split}.txt").write_text("\n".join(names) + "\n\n")
    for seed, name in enumerate(NAMES):
        Image.fromarray(_image(seed)).save(root / "images" / f"{name}.jpg", quality=95)


SURVEY_DEPTH = np.full((H, W), 2.5, dtype=np.float32)
SURVEY_DEPTH[0, :6] = [0.0005, 0.001, 10.0, 10.5, -1.0, 0.0]  # NaN is refused
SURVEY_DEPTH_EXPECTED = SURVEY_DEPTH.copy()
SURVEY_DEPTH_EXPECTED[0, :6] = [0.0, 0.001, 10.0, 0.0, 0.0, 0.0]
SURVEY_EDGES = (np.arange(H * W).reshape(H, W) % 3 == 0).astype(np.float32)


def _survey_normals() -> np.ndarray:
    normals = _smooth_normals()
    normals[2:4, 3:5] = 0.0
    return normals


@pytest.fixture
def survey_root(tmp_path: Path) -> Path:
    root = tmp_path / "survey"
    _write_common(root)
    for index, name in enumerate(NAMES):
        Image.fromarray(RAW_SEMSEG).save(root / "segmentation" / f"{name}.png")
        np.save(root / "depth" / f"{name}.npy", SURVEY_DEPTH)
        normals = _survey_normals()
        # "a" and "c" stored H×W×3, "b" stored 3×H×W.
        stored = normals.transpose(2, 0, 1) if index == 1 else normals
        np.save(root / "normals" / f"{name}.npy", np.ascontiguousarray(stored))
        np.save(root / "edge" / f"{name}.npy", SURVEY_EDGES)
    return root


ASTMT_DEPTH = np.linspace(0.5, 9.5, H * W, dtype=np.float32).reshape(H, W)
ASTMT_DEPTH[1, 2:5] = 0.0
ASTMT_EDGES = np.zeros((H, W), dtype=np.uint8)
ASTMT_EDGES[3, :] = 255
ASTMT_EDGES[5, 2] = 1  # any positive value is an edge


def _astmt_raw_normals() -> np.ndarray:
    raw = np.clip(np.round((_smooth_normals() + 1.0) / 2.0 * 255.0), 0, 255).astype(np.uint8)
    raw[:, :8] = 0  # a whole JPEG block of invalid pixels decodes exactly to zero
    return raw


@pytest.fixture
def astmt_root(tmp_path: Path) -> Path:
    root = tmp_path / "astmt"
    _write_common(root)
    for name in NAMES:
        scipy.io.savemat(root / "segmentation" / f"{name}.mat", {"segmentation": RAW_SEMSEG})
        scipy.io.savemat(root / "depth" / f"{name}.mat", {"depth": ASTMT_DEPTH})
        Image.fromarray(_astmt_raw_normals()).save(
            root / "normals" / f"{name}.jpg", quality=95, subsampling=0
        )
        Image.fromarray(ASTMT_EDGES).save(root / "edge" / f"{name}.png")
    return root


def _assert_sample_shapes(sample: Sample, tasks: tuple[str, ...] = TASKS) -> None:
    assert sample["image"].shape == (3, H, W) and sample["image"].dtype == torch.float32
    assert 0.0 <= float(sample["image"].min()) and float(sample["image"].max()) <= 1.0
    assert set(sample["targets"]) == set(tasks)
    assert sample["labelled"] == {task: True for task in tasks}
    shapes = {"semseg": (H, W), "depth": (1, H, W), "normals": (3, H, W), "edges": (1, H, W)}
    for task in tasks:
        assert sample["targets"][task].shape == shapes[task]
    if "semseg" in tasks:
        assert sample["targets"]["semseg"].dtype == torch.int64
    for task in set(tasks) - {"semseg"}:
        assert sample["targets"][task].dtype == torch.float32


# --- survey layout --------------------------------------------------------------------------


def test_survey_decoding(survey_root: Path) -> None:
    train = NYUD(survey_root, "train", TASKS)
    assert train.layout == "survey"
    assert len(train) == 2 and train.names == ["a", "b"]
    assert NUM_CLASSES == 40
    for index, name in enumerate(["a", "b"]):
        sample = train[index]
        assert sample["name"] == name
        _assert_sample_shapes(sample)
        targets = sample["targets"]
        assert torch.equal(targets["semseg"], torch.from_numpy(EXPECTED_SEMSEG))
        flat = targets["semseg"].flatten()
        assert int(flat[0]) == 255 and int(flat[1]) == 0 and int(flat[40]) == 39
        assert torch.equal(targets["depth"][0], torch.from_numpy(SURVEY_DEPTH_EXPECTED))
        # H×W×3 and 3×H×W storage decode to the same (3, H, W) target.
        expected_normals = torch.from_numpy(_survey_normals().transpose(2, 0, 1).copy())
        assert torch.equal(targets["normals"], expected_normals)
        assert torch.equal(targets["normals"][:, 2:4, 3:5], torch.zeros(3, 2, 2))
        assert torch.equal(targets["edges"][0], torch.from_numpy(SURVEY_EDGES))
        image = np.asarray(Image.open(survey_root / "images" / f"{name}.jpg"), np.float32)
        assert torch.allclose(sample["image"], torch.from_numpy(image.transpose(2, 0, 1) / 255))
    assert len(NYUD(survey_root, "val", ["depth"])) == 1


def test_task_subset_and_transform(survey_root: Path) -> None:
    seen: list[str] = []

    def flip(sample: Sample) -> Sample:
        seen.append(sample["name"])
        targets = {task: t.flip(-1) for task, t in sample["targets"].items()}
        return Sample(
            name=sample["name"].upper(),
            image=sample["image"].flip(-1),
            targets=targets,
            labelled=sample["labelled"],
        )

    plain = NYUD(survey_root, "val", ["semseg", "edges", "semseg"])[0]
    _assert_sample_shapes(plain, ("semseg", "edges"))
    flipped = NYUD(survey_root, "val", ["semseg", "edges"], transform=flip)[0]
    assert seen == ["c"] and flipped["name"] == "C"
    assert torch.equal(flipped["targets"]["semseg"], plain["targets"]["semseg"].flip(-1))
    assert torch.equal(flipped["image"], plain["image"].flip(-1))


# --- ASTMT / RCM layout ---------------------------------------------------------------------


def test_astmt_decoding(astmt_root: Path) -> None:
    val = NYUD(astmt_root, "val", TASKS)
    assert val.layout == "astmt" and len(val) == 1
    sample = val[0]
    _assert_sample_shapes(sample)
    targets = sample["targets"]
    assert torch.equal(targets["semseg"], torch.from_numpy(EXPECTED_SEMSEG))
    assert torch.equal(targets["depth"][0], torch.from_numpy(ASTMT_DEPTH))
    assert float(targets["depth"][0, 1, 3]) == 0.0
    expected_edges = (ASTMT_EDGES > 0).astype(np.float32)
    assert expected_edges[5, 2] == 1.0
    assert torch.equal(targets["edges"][0], torch.from_numpy(expected_edges))

    normals = targets["normals"]
    # Invalid (raw all-zero) pixels stay all-zero; the rest are unit vectors.
    assert torch.equal(normals[:, :, :8], torch.zeros(3, H, 8))
    assert torch.allclose(normals[:, :, 8:].norm(dim=0), torch.ones(H, W - 8), atol=1e-5)
    # Exactly 2x/255 - 1 renormalised, from the decoded JPEG pixels ...
    raw = np.asarray(Image.open(astmt_root / "normals" / "c.jpg")).astype(np.float64)
    decoded = 2.0 * raw[:, 8:] / 255.0 - 1.0
    decoded /= np.linalg.norm(decoded, axis=-1, keepdims=True)
    expected = torch.from_numpy(decoded.transpose(2, 0, 1).astype(np.float32))
    assert torch.allclose(normals[:, :, 8:], expected, atol=1e-6)
    # ... and close to the normals the file was made from, up to JPEG loss.
    truth = torch.from_numpy(_smooth_normals()[:, 8:].transpose(2, 0, 1).copy())
    assert float((normals[:, :, 8:] - truth).abs().max()) < 0.05


def test_layout_detection(survey_root: Path, astmt_root: Path) -> None:
    assert detect_layout(survey_root) == "survey"
    assert detect_layout(astmt_root) == "astmt"
    assert NYUD(astmt_root, "train", ["semseg"], layout="astmt").layout == "astmt"
    # Asking for the other layout looks for files that are not there.
    with pytest.raises(DatasetError, match=r"depth[/\\]a\.mat"):
        NYUD(survey_root, "train", ["depth"], layout="astmt")
    # A folder with both kinds of files needs an explicit layout.
    np.save(astmt_root / "depth" / "extra.npy", np.zeros((H, W), np.float32))
    with pytest.raises(DatasetError, match="cannot tell the layout"):
        NYUD(astmt_root, "train", ["depth"])
    assert NYUD(astmt_root, "train", ["depth"], layout="astmt").layout == "astmt"


# --- describe ---------------------------------------------------------------------------------


def test_describe_counts(survey_root: Path, astmt_root: Path) -> None:
    full = {"samples": 2, "images": 2, "semseg": 2, "depth": 2, "normals": 2, "edges": 2}
    (survey_root / "edge" / "b.npy").unlink()
    (survey_root / "images" / "c.jpg").unlink()
    counts = describe(survey_root)
    assert counts["train"] == {**full, "edges": 1}
    assert counts["val"] == {
        "samples": 1,
        "images": 0,
        "semseg": 1,
        "depth": 1,
        "normals": 1,
        "edges": 1,
    }
    assert describe(astmt_root)["train"] == full
    assert describe(astmt_root, layout="survey")["train"]["depth"] == 0


# --- errors -----------------------------------------------------------------------------------


def _one_line(err: pytest.ExceptionInfo[DatasetError], path: Path) -> None:
    message = str(err.value)
    assert str(path) in message
    assert "\n" not in message


def test_missing_root_split_folder_and_file(survey_root: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetError) as err:
        NYUD(missing, "train", TASKS)
    _one_line(err, missing)
    with pytest.raises(DatasetError) as err:
        describe(missing)
    _one_line(err, missing)

    with pytest.raises(DatasetError) as err:
        NYUD(survey_root, "test", TASKS)
    _one_line(err, survey_root / "gt_sets" / "test.txt")

    sample_file = survey_root / "normals" / "b.npy"
    sample_file.unlink()
    with pytest.raises(DatasetError) as err:
        NYUD(survey_root, "train", ["normals"])
    _one_line(err, sample_file)
    assert len(NYUD(survey_root, "val", ["normals"])) == 1  # other splits still load

    (survey_root / "edge" / "a.npy").unlink()
    (survey_root / "edge" / "b.npy").unlink()
    (survey_root / "edge" / "c.npy").unlink()
    (survey_root / "edge").rmdir()
    with pytest.raises(DatasetError) as err:
        NYUD(survey_root, "val", ["semseg", "edges"])
    _one_line(err, survey_root / "edge")
    assert len(NYUD(survey_root, "val", ["semseg"])) == 1

    with pytest.raises(DatasetError, match="unknown NYUD task"):
        NYUD(survey_root, "val", ["saliency"])


@pytest.mark.parametrize(
    ("layout", "relative", "tasks"),
    [
        ("survey", "depth/a.npy", ["depth"]),
        ("survey", "normals/a.npy", ["normals"]),
        ("survey", "segmentation/a.png", ["semseg"]),
        ("survey", "images/a.jpg", ["depth"]),
        ("astmt", "segmentation/a.mat", ["semseg"]),
        ("astmt", "depth/a.mat", ["depth"]),
        ("astmt", "normals/a.jpg", ["normals"]),
        ("astmt", "edge/a.png", ["edges"]),
    ],
)
def test_corrupt_file(
    request: pytest.FixtureRequest, layout: str, relative: str, tasks: list[str]
) -> None:
    root: Path = request.getfixturevalue(f"{layout}_root")
    path = root / relative
    path.write_bytes(b"this is not a valid file at all" * 4)
    dataset = NYUD(root, "train", tasks)  # files are read lazily
    assert len(dataset[1]["targets"]) == len(tasks)
    with pytest.raises(DatasetError) as err:
        dataset[0]
    _one_line(err, path)


def test_malformed_contents(survey_root: Path, astmt_root: Path) -> None:
    cases = [
        (survey_root, "depth", survey_root / "depth" / "a.npy", "shape"),
        (survey_root, "normals", survey_root / "normals" / "a.npy", "shape"),
        (survey_root, "semseg", survey_root / "segmentation" / "a.png", "labels"),
        (astmt_root, "semseg", astmt_root / "segmentation" / "a.mat", "no key"),
        (astmt_root, "depth", astmt_root / "depth" / "a.mat", "no key"),
    ]
    np.save(cases[0][2], np.ones((H + 1, W), np.float32))
    np.save(cases[1][2], np.ones((H, W, 2), np.float32))
    bad_labels = RAW_SEMSEG.copy()
    bad_labels[0, 0] = 41
    Image.fromarray(bad_labels).save(cases[2][2])
    scipy.io.savemat(cases[3][2], {"labels": RAW_SEMSEG})
    scipy.io.savemat(cases[4][2], {"depths": ASTMT_DEPTH})
    for root, task, path, words in cases:
        with pytest.raises(DatasetError, match=words) as err:
            NYUD(root, "train", [task])[0]
        _one_line(err, path)


# --- write_nyud round trip --------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["survey", "astmt"])
def test_write_nyud_round_trip(tmp_path: Path, layout: str) -> None:
    scenes = SyntheticScenes(3, list(TASKS), image_size=16, num_classes=5, seed=0)
    rendered = [scenes.scene(i) for i in range(3)]
    splits = {
        "train": [("s0", rendered[0]), ("s1", rendered[1])],
        "val": [("s2", rendered[2])],
    }
    root = tmp_path / layout
    write_nyud(root, splits, layout=layout)  # type: ignore[arg-type]

    assert detect_layout(root) == layout
    full = {"samples": 2, "images": 2, "semseg": 2, "depth": 2, "normals": 2, "edges": 2}
    assert describe(root) == {"train": full, "val": {key: 1 for key in full}}
    if layout == "survey":
        stored = np.asarray(Image.open(root / "segmentation" / "s0.png"))
        assert stored.min() >= 1  # background (class 0) is stored as 1, not "unlabelled"
    else:
        stored = scipy.io.loadmat(root / "segmentation" / "s0.mat")["segmentation"]
        assert stored.min() >= 1

    for split, pairs in splits.items():
        dataset = NYUD(root, split, TASKS)
        assert dataset.layout == layout and dataset.names == [name for name, _ in pairs]
        for index, (name, scene) in enumerate(pairs):
            sample = dataset[index]
            assert sample["name"] == name
            targets = sample["targets"]
            assert torch.equal(targets["semseg"], torch.from_numpy(scene.semseg))
            assert torch.equal(targets["depth"][0], torch.from_numpy(scene.depth))
            assert torch.equal(targets["edges"][0], torch.from_numpy(scene.edges))
            normals = torch.from_numpy(scene.normals)
            atol = 1e-6 if layout == "survey" else 0.03
            assert torch.allclose(targets["normals"], normals, atol=atol)
            image = torch.from_numpy(scene.image.transpose(2, 0, 1).copy())
            assert float((sample["image"] - image).abs().mean()) < 0.03
