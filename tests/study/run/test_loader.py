"""Datasets on disk through DataLoader workers: the batches are the same whatever the
number of processes decoding them, and only the seed and epoch choose them."""

from pathlib import Path

import pytest
import torch

from study.data import DatasetError, synthesize
from study.run import DiskSplit, TensorSplit, trial_splits, worker_batches
from study.spec import DatasetSpec, StudySpec

TASKS = ("semseg", "depth", "normals", "edges")


@pytest.fixture(scope="module")
def nyud(tmp_path_factory: pytest.TempPathFactory) -> DatasetSpec:
    root = tmp_path_factory.mktemp("loader") / "nyud"
    synthesize(root, "nyud", train=6, val=3, image_size=24)
    return DatasetSpec(name="nyud", root=str(root), image_size=16, num_classes=40)


def _flat(batches: list) -> list[torch.Tensor]:
    out = []
    for images, targets, labelled in batches:
        out += [images, *(targets[t] for t in TASKS), *(labelled[t] for t in TASKS)]
    return out


def _epochs(split: DiskSplit, seed: int, **shard: int) -> list[torch.Tensor]:
    # Two epochs, seeded as the trial seeds them.
    return _flat(
        [b for epoch in (0, 1) for b in worker_batches(split, 2, seed * 100_003 + epoch, **shard)]
    )


def test_workers_decode_the_same_batches_as_the_training_process(nyud: DatasetSpec) -> None:
    alone, _ = trial_splits(nyud, 0, TASKS, workers=0)
    helped, _ = trial_splits(nyud, 0, TASKS, workers=2)
    assert isinstance(alone, DiskSplit) and isinstance(helped, DiskSplit)
    expected = _epochs(alone, 7)
    got = _epochs(helped, 7)
    assert len(got) == len(expected) == 2 * 3 * 9  # 2 epochs × 3 batches × 9 tensors
    assert all(torch.equal(a, b) for a, b in zip(expected, got, strict=True))
    assert helped._loader is not None and helped._loader.persistent_workers
    # A different seed, another order (and other augmentations), in either case.
    other = _epochs(helped, 8)
    assert not all(torch.equal(a, b) for a, b in zip(expected, other, strict=True))
    # The epochs differ from each other: the order is drawn per epoch.
    first, second = expected[:27], expected[27:]
    assert not all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_each_data_parallel_worker_decodes_its_share_of_each_global_batch(
    nyud: DatasetSpec,
) -> None:
    split, _ = trial_splits(nyud, 0, TASKS, workers=2)
    seed = 11
    whole = [images for images, *_ in worker_batches(split, 4, seed)]
    shares = [
        [images for images, *_ in worker_batches(split, 2, seed, rank, 2, drop_last=True)]
        for rank in (0, 1)
    ]
    # One full global batch of 4 (the last, of 2, is dropped): each rank takes its half.
    assert [len(s) for s in shares] == [1, 1]
    assert torch.equal(torch.cat([shares[0][0], shares[1][0]]), whole[0])
    evaluated = [b[0] for rank in (0, 1) for b in worker_batches(split, 2, None, rank, 2)]
    assert sum(b.shape[0] for b in evaluated) == len(split)  # evaluation drops nothing


def test_synthetic_scenes_stay_in_memory() -> None:
    data = DatasetSpec(train_samples=4, val_samples=2, image_size=16)
    train, val = trial_splits(data, 0, ("semseg",), workers=2)
    assert isinstance(train, TensorSplit) and isinstance(val, TensorSplit)


@pytest.mark.parametrize(
    ("cpus", "workers", "expected"),
    [(1, None, 0), (4, None, 3), (2.5, None, 1), (32, None, 8), (1, 3, 3), (8, 0, 0)],
)
def test_loader_workers_follow_the_trial_cpus_unless_set(
    cpus: float, workers: int | None, expected: int
) -> None:
    spec = StudySpec(name="w", tasks=["depth"], cpus_per_trial=cpus, loader_workers=workers)
    assert spec.loader_worker_count == expected


def test_a_broken_file_read_by_a_worker_is_one_line(tmp_path: Path) -> None:
    synthesize(tmp_path / "nyud", "nyud", train=2, val=1, image_size=16)
    (tmp_path / "nyud" / "images" / "train_00001.jpg").write_bytes(b"not a jpeg")
    data = DatasetSpec(name="nyud", root=str(tmp_path / "nyud"), image_size=16, num_classes=40)
    train, _ = trial_splits(data, 0, ("depth",), workers=2)
    with pytest.raises(DatasetError) as info:
        list(train.batches(2, 0))
    message = str(info.value)
    assert message.startswith("image ") and "train_00001.jpg cannot be read" in message
    assert "\n" not in message and "Traceback" not in message
