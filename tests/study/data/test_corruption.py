"""One corrupt file in a clean dataset folder: `data check` reports it by path and exits
non-zero, and the loader refuses it with one DatasetError line naming it."""

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from search_spaces import MAX_MESSAGE
from study.cli import main
from study.data import DatasetError, get_format, synthesize

SIZE = 32


def _npy(value: object) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        np.save(path, value, allow_pickle=True)

    return write


def _png(array: np.ndarray) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        Image.fromarray(array).save(path)

    return write


def _bytes(data: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _nan_depth() -> np.ndarray:
    depth = np.ones((SIZE, SIZE), dtype=np.float32)
    depth[3, 4] = np.nan
    return depth


# (format, file relative to the root, corruption, a word the message carries)
CASES = [
    ("nyud", "depth/train_00001.npy", _npy(_nan_depth()), "NaN"),
    ("nyud", "depth/train_00001.npy", _npy(np.array([object()] * 4)), "cannot be read"),
    ("nyud", "normals/val_00000.npy", _npy(np.full((SIZE, SIZE, 3), np.inf)), "infinite"),
    ("nyud", "segmentation/train_00002.png", _png(np.zeros((SIZE, SIZE + 3), np.uint8)), "shape"),
    ("nyud", "segmentation/train_00002.png", _png(np.ones((SIZE, SIZE), np.uint16)), "8-bit"),
    ("nyud", "images/train_00003.jpg", _truncate, "cannot be read"),
    ("nyud", "images/val_00001.jpg", _bytes(b""), "cannot be read"),
    ("nyud", "gt_sets/train.txt", _bytes(b"train_00000\ntrain_00001\ntrain_00000\n"), "twice"),
    ("nyud", "gt_sets/val.txt", _bytes(b"val_00000\nval_\xff\n"), "not UTF-8"),
    ("pascal", "pascal-context/trainval/train_00001.mat", _bytes(b"MATLAB garbage" * 9), "read"),
    (
        "pascal",
        "semseg/pascal-context/val_00002.png",
        _png(np.ones((SIZE, SIZE), np.uint16)),
        "8-bit",
    ),
    ("pascal", "normals_distill/train_00000.png", _truncate, "cannot be read"),
    ("pascal", "JPEGImages/train_00004.jpg", _bytes(b""), "cannot be read"),
    ("voc", "Annotations/train_00002.xml", _bytes(b"<annotation><object>"), "not valid XML"),
    ("voc", "JPEGImages/val_00001.jpg", _truncate, "cannot be read"),
    ("voc", "ImageSets/Main/train.txt", _bytes(b"\xfe\xfftrain_00000\n"), "not UTF-8"),
]


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("clean")
    for fmt in ("nyud", "pascal", "voc"):
        synthesize(out / fmt, fmt, train=6, val=3, image_size=SIZE)
    return {fmt: out / fmt for fmt in ("nyud", "pascal", "voc")}


def test_clean_folders_pass_the_check(clean: dict[str, Path]) -> None:
    for fmt, root in clean.items():
        assert main(["data", "check", str(root), "--format", fmt]) == 0


@pytest.mark.parametrize(("fmt", "name", "corrupt", "word"), CASES)
def test_a_corrupt_file_is_reported_and_refused(
    clean: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    fmt: str,
    name: str,
    corrupt: Callable[[Path], None],
    word: str,
) -> None:
    root = tmp_path / fmt
    shutil.copytree(clean[fmt], root)
    path = root / name
    corrupt(path)

    assert main(["data", "check", str(root), "--format", fmt]) == 2
    err = capsys.readouterr().err
    reported = [line for line in err.splitlines() if str(path) in line]
    assert reported and word in reported[0], err

    split = "val" if Path(name).stem.startswith("val") else "train"
    with pytest.raises(DatasetError) as caught:
        dataset = get_format(fmt).read(
            root, split, [t for t in get_format(fmt).tasks if t != "human_parts"]
        )
        for index in range(len(dataset)):
            dataset[index]
    message = str(caught.value)
    assert str(path) in message and word in message and "\n" not in message
    assert len(message) <= MAX_MESSAGE


def test_sample_decodes_only_some(
    clean: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["data", "check", str(clean["voc"]), "--format", "voc", "--sample", "2"]) == 0
    assert "train: decoded 2 of 6 samples" in capsys.readouterr().err
