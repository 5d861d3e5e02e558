from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, default_collate

from models.tasks import get_task
from study.data import Scene, SyntheticScenes, render_scene

TASKS = ("semseg", "depth", "normals", "edges", "saliency")


def _scenes(count: int = 12, image_size: int = 64, num_classes: int = 5) -> list[Scene]:
    return [
        render_scene(np.random.default_rng([7, i]), image_size, num_classes) for i in range(count)
    ]


def _rays(size: int) -> np.ndarray:
    coords = (np.arange(size) - (size - 1) / 2) / size
    return np.stack(
        [
            np.broadcast_to(coords[None], (size, size)),
            np.broadcast_to(coords[:, None], (size, size)),
            np.ones((size, size)),
        ]
    )


def _assert_same_item(a: dict, b: dict) -> None:
    assert torch.equal(a["image"], b["image"])
    assert a["targets"].keys() == b["targets"].keys()
    for task in a["targets"]:
        assert torch.equal(a["targets"][task], b["targets"][task])


# --- determinism ---------------------------------------------------------------------------


def test_same_seed_split_index_gives_identical_samples() -> None:
    first = SyntheticScenes(8, TASKS, split="val", seed=3)
    second = SyntheticScenes(8, TASKS, split="val", seed=3)
    for index in (0, 5):
        _assert_same_item(first[index], second[index])
    # Reading other items in between must not change an item.
    _ = first[1], first[2]
    _assert_same_item(first[5], second[5])


def test_seed_and_split_change_the_images() -> None:
    base = SyntheticScenes(4, ["semseg"], split="train", seed=0)[2]["image"]
    other_seed = SyntheticScenes(4, ["semseg"], split="train", seed=1)[2]["image"]
    other_split = SyntheticScenes(4, ["semseg"], split="val", seed=0)[2]["image"]
    other_test = SyntheticScenes(4, ["semseg"], split="test", seed=0)[2]["image"]
    assert not torch.equal(base, other_seed)
    assert not torch.equal(base, other_split)
    assert not torch.equal(other_split, other_test)


# --- scene invariants ----------------------------------------------------------------------


def test_scene_dtypes_shapes_and_ranges() -> None:
    for scene in _scenes(image_size=48, num_classes=4):
        assert scene.image.dtype == np.float32 and scene.image.shape == (48, 48, 3)
        assert scene.image.min() >= 0.0 and scene.image.max() <= 1.0
        assert scene.semseg.dtype == np.int64 and scene.semseg.shape == (48, 48)
        assert scene.semseg.min() >= 0 and scene.semseg.max() < 4
        assert scene.depth.dtype == np.float32 and scene.depth.shape == (48, 48)
        assert (scene.depth > 0).all()
        assert scene.normals.dtype == np.float32 and scene.normals.shape == (3, 48, 48)
        for name in ("edges", "saliency"):
            array = getattr(scene, name)
            assert array.dtype == np.float32 and array.shape == (48, 48)
            assert set(np.unique(array)) <= {0.0, 1.0}
        assert scene.boxes.dtype == np.float32 and scene.boxes.shape == (len(scene.labels), 4)
        assert scene.labels.dtype == np.int64


def test_scenes_have_objects_of_several_classes_and_a_floor_in_range() -> None:
    scenes = _scenes(count=30)
    assert {int(c) for s in scenes for c in s.labels} == {1, 2, 3, 4}
    floors = np.concatenate([s.depth[s.semseg == 0] for s in scenes])
    objects = np.concatenate([s.depth[s.semseg != 0] for s in scenes])
    assert floors.min() > 3.5 and floors.max() < 10.5
    assert objects.min() > 0.5 and objects.max() < floors.max()


def test_normals_are_unit_and_face_the_camera() -> None:
    for scene in _scenes():
        norm = np.linalg.norm(scene.normals.astype(np.float64), axis=0)
        assert np.abs(norm - 1).max() < 1e-4
        facing = (scene.normals * _rays(64)).sum(axis=0)
        assert (facing < 0).all()


def test_normals_of_the_floor_are_those_of_one_plane() -> None:
    scene = _scenes(count=1)[0]
    # Away from objects, the floor is one plane, so it has one normal.
    near_object = np.zeros((64, 64), dtype=bool)
    rows, cols = np.nonzero(scene.semseg != 0)
    for dr in range(-2, 3):
        for dc in range(-2, 3):
            near_object[np.clip(rows + dr, 0, 63), np.clip(cols + dc, 0, 63)] = True
    floor = scene.normals[:, ~near_object]
    assert floor.shape[1] > 500
    assert floor.std(axis=1).max() < 1e-4
    # It recedes upwards: the normal points up (−y) and towards the camera (−z).
    assert floor[1].mean() < -0.1 and floor[2].mean() < -0.5


def test_curved_objects_have_varying_depth() -> None:
    # Class 1 is a disc: its depth bulges towards the camera.
    spreads = [
        np.ptp(scene.depth[scene.semseg == 1])
        for scene in _scenes(count=30)
        if (scene.semseg == 1).sum() > 30
    ]
    assert spreads and max(spreads) > 0.1


def test_saliency_is_the_foreground() -> None:
    for scene in _scenes():
        assert np.array_equal(scene.saliency.astype(bool), scene.semseg != 0)


def test_edges_lie_on_every_class_boundary_and_depth_jump() -> None:
    for scene in _scenes():
        edges = scene.edges.astype(bool)
        depth = scene.depth
        for axis in (0, 1):
            class_change = np.diff(scene.semseg, axis=axis) != 0
            lo = depth[:-1] if axis == 0 else depth[:, :-1]
            hi = depth[1:] if axis == 0 else depth[:, 1:]
            jump = np.abs(hi - lo) > 0.15 * np.minimum(hi, lo)
            marked = (edges[:-1] | edges[1:]) if axis == 0 else (edges[:, :-1] | edges[:, 1:])
            assert marked[class_change | jump].all()
        # Thin: edges cover a small part of the image and never a whole object.
        assert edges.mean() < 0.15
        assert (scene.saliency.astype(bool) & ~edges).any()


def test_boxes_enclose_their_objects() -> None:
    for scene in _scenes():
        ids = [i for i in np.unique(scene.instances) if i != 0]
        assert len(ids) == len(scene.labels) >= 1
        covered = np.zeros(scene.semseg.shape, dtype=bool)
        for index, (box, label) in enumerate(zip(scene.boxes, scene.labels, strict=True), 1):
            rows, cols = np.nonzero(scene.instances == index)
            x0, y0, x1, y1 = box
            assert x0 == cols.min() and y0 == rows.min()
            assert x1 == cols.max() + 1 and y1 == rows.max() + 1
            assert (scene.semseg[rows, cols] == label).all()
            covered[int(y0) : int(y1), int(x0) : int(x1)] = True
        assert covered[scene.semseg != 0].all()


# --- dataset -------------------------------------------------------------------------------


def test_items_have_the_task_formats() -> None:
    dataset = SyntheticScenes(6, TASKS, image_size=32, num_classes=5)
    assert len(dataset) == 6
    item = dataset[0]
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 32, 32)
    targets = item["targets"]
    assert list(targets) == list(TASKS)
    assert targets["semseg"].dtype == torch.int64 and targets["semseg"].shape == (32, 32)
    for task in ("depth", "edges", "saliency"):
        assert targets[task].dtype == torch.float32 and targets[task].shape == (1, 32, 32)
    assert targets["normals"].dtype == torch.float32 and targets["normals"].shape == (3, 32, 32)
    assert item["labelled"] == {task: True for task in TASKS}

    images = torch.stack([dataset[i]["image"] for i in range(len(dataset))])
    assert images.mean(dim=(0, 2, 3)).abs().max() < 0.6
    assert ((images.std(dim=(0, 2, 3)) > 0.5) & (images.std(dim=(0, 2, 3)) < 2)).all()


def test_only_requested_tasks_and_default_collate() -> None:
    dataset = SyntheticScenes(4, ["depth", "saliency"], image_size=32)
    batch = next(iter(DataLoader(dataset, batch_size=4)))
    assert set(batch["targets"]) == {"depth", "saliency"}
    assert batch["image"].shape == (4, 3, 32, 32)
    assert batch["targets"]["depth"].shape == (4, 1, 32, 32)
    assert bool(batch["labelled"]["depth"].all())
    assert default_collate([dataset[0], dataset[1]])["targets"]["saliency"].shape == (2, 1, 32, 32)


def test_item_index_bounds() -> None:
    dataset = SyntheticScenes(3, ["semseg"], image_size=16)
    assert torch.equal(dataset[-1]["image"], dataset[2]["image"])
    with pytest.raises(IndexError):
        dataset[3]


@pytest.mark.parametrize("task", ["human_parts", "segmentation", "depht"])
def test_unknown_task_is_rejected(task: str) -> None:
    with pytest.raises(ValueError, match=rf"{task}.*semseg"):
        SyntheticScenes(4, ["semseg", task])


def test_unknown_split_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"validation.*train.*val.*test"):
        SyntheticScenes(4, ["semseg"], split="validation")


# --- learnability --------------------------------------------------------------------------

NUM_CLASSES = 5
CHANNELS = {"semseg": NUM_CLASSES, "depth": 1, "normals": 3, "edges": 1, "saliency": 1}


class _TinyNet(nn.Module):
    """Fully convolutional, one downsample and a skip; about 25k parameters."""

    def __init__(self, out: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.c2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.c3 = nn.Conv2d(32, 32, 3, padding=2, dilation=2)
        self.c4 = nn.Conv2d(48, 24, 3, padding=1)
        self.head = nn.Conv2d(24, out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.c1(x))
        b = F.relu(self.c3(F.relu(self.c2(a))))
        b = F.interpolate(b, size=a.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(F.relu(self.c4(torch.cat([a, b], dim=1))))


class _Constant(nn.Module):
    """One learnable value per output channel, whatever the input."""

    def __init__(self, out: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.view(1, -1, 1, 1).expand(x.shape[0], -1, *x.shape[-2:])


def _init_bias(bias: torch.Tensor) -> None:
    # Start both models at a plausible depth and at normals facing the camera.
    with torch.no_grad():
        bias.zero_()
        bias[NUM_CLASSES] = 5.0
        bias[NUM_CLASSES + 3] = -1.0


def _split_outputs(out: torch.Tensor) -> dict[str, torch.Tensor]:
    preds = dict(zip(CHANNELS, out.split(list(CHANNELS.values()), dim=1), strict=True))
    preds["normals"] = F.normalize(preds["normals"], dim=1)
    return preds


def _task_losses(model: nn.Module, images: torch.Tensor, targets: dict) -> dict:
    preds = _split_outputs(model(images))
    return {t: get_task(t, NUM_CLASSES).loss(preds[t], targets[t]) for t in CHANNELS}


def _train_and_evaluate(model: nn.Module, train: dict, val: dict, lr: float) -> dict:
    torch.manual_seed(0)
    epochs, batch_size = 12, 16
    count = train["image"].shape[0]
    steps = epochs * -(-count // batch_size)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps)
    # Normals and depth live on different scales from the classification losses.
    weights = {"normals": 10.0, "depth": 0.5}
    for _ in range(epochs):
        order = torch.randperm(count)
        for start in range(0, count, batch_size):
            idx = order[start : start + batch_size]
            targets = {t: v[idx] for t, v in train["targets"].items()}
            losses = _task_losses(model, train["image"][idx], targets)
            loss = sum(weights.get(t, 1.0) * v for t, v in losses.items())
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
    with torch.no_grad():
        return {t: v.item() for t, v in _task_losses(model, val["image"], val["targets"]).items()}


def test_every_task_is_learnable_from_pixels() -> None:
    def load(split: str, count: int) -> dict:
        data = SyntheticScenes(count, TASKS, split=split, image_size=32, num_classes=NUM_CLASSES)
        return next(iter(DataLoader(data, batch_size=count)))

    train, val = load("train", 256), load("val", 64)
    torch.manual_seed(0)
    net = _TinyNet(sum(CHANNELS.values()))
    _init_bias(net.head.bias)
    constant = _Constant(sum(CHANNELS.values()))
    _init_bias(constant.bias)

    net_loss = _train_and_evaluate(net, train, val, lr=3e-3)
    constant_loss = _train_and_evaluate(constant, train, val, lr=0.1)
    ratios = {t: net_loss[t] / constant_loss[t] for t in TASKS}
    assert all(ratio <= 0.85 for ratio in ratios.values()), ratios


def test_detection_targets_are_the_objects_boxes_padded() -> None:
    scenes = SyntheticScenes(3, ["semseg", "detection"], image_size=32, max_objects=4, seed=2)
    for i in range(3):
        scene, rows = scenes.scene(i), scenes[i]["targets"]["detection"]
        count = len(scene.labels)
        assert rows.shape == (4, 5) and (rows[count:, 4] == -1).all()
        assert torch.equal(rows[:count, :4], torch.from_numpy(scene.boxes))
        assert torch.equal(rows[:count, 4].long(), torch.from_numpy(scene.labels) - 1)
