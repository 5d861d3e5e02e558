from __future__ import annotations

import pytest
import torch

from study.data import Sample
from study.data.transforms import (
    Compose,
    Normalize,
    PhotometricJitter,
    RandomCropPad,
    RandomHorizontalFlip,
    RandomScale,
    Resize,
)

H, W = 12, 16


def _sample(seed: int = 0) -> Sample:
    g = torch.Generator().manual_seed(seed)
    normals = torch.randn(3, H, W, generator=g)
    normals[2] = -normals[2].abs() - 0.1
    normals = normals / normals.norm(dim=0, keepdim=True)
    normals[:, :3, :4] = 0  # an invalid block
    semseg = torch.randint(0, 21, (H, W), generator=g)
    semseg[0, :5] = 255
    parts = torch.randint(0, 7, (H, W), generator=g)
    return Sample(
        name="s",
        image=torch.rand(3, H, W, generator=g),
        targets={
            "semseg": semseg,
            "human_parts": parts,
            "normals": normals,
            "edges": (torch.rand(1, H, W, generator=g) > 0.8).float(),
            "saliency": (torch.rand(1, H, W, generator=g) > 0.5).float(),
            "depth": torch.rand(1, H, W, generator=g) * 5 + 1,
        },
        labelled={"semseg": True, "human_parts": False},
    )


def _assert_normals_unit_or_zero(normals: torch.Tensor) -> None:
    norm = normals.norm(dim=0)
    assert (((norm - 1).abs() < 1e-4) | (norm == 0)).all()


def test_flip_mirrors_everything_and_negates_normals_x() -> None:
    sample = _sample()
    out = RandomHorizontalFlip(p=1.0)(sample)
    assert torch.equal(out["image"], sample["image"].flip(-1))
    for task, target in sample["targets"].items():
        expected = target.flip(-1)
        if task == "normals":
            expected = expected.clone()
            expected[0] = -expected[0]
        assert torch.equal(out["targets"][task], expected), task
    assert (out["targets"]["normals"][:, :3, -4:] == 0).all()
    assert out["labelled"] == sample["labelled"] and out["name"] == "s"
    kept = RandomHorizontalFlip(p=0.0)(sample)
    assert torch.equal(kept["targets"]["normals"], sample["targets"]["normals"])


def test_crop_pad_fills_with_ignore_and_invalid_values() -> None:
    sample = _sample()
    out = RandomCropPad((H + 6, W + 8), generator=torch.Generator().manual_seed(1))(sample)
    t = out["targets"]
    assert out["image"].shape == (3, H + 6, W + 8)
    assert torch.equal(out["image"][:, :H, :W], sample["image"])
    assert (out["image"][:, H:] == 0).all() and (out["image"][:, :, W:] == 0).all()
    for task in ("semseg", "human_parts", "edges", "saliency"):
        assert t[task].dtype == sample["targets"][task].dtype
        assert (t[task][..., H:, :] == 255).all() and (t[task][..., :, W:] == 255).all(), task
        assert torch.equal(t[task][..., :H, :W], sample["targets"][task])
    for task in ("normals", "depth"):
        assert (t[task][..., H:, :] == 0).all() and (t[task][..., :, W:] == 0).all(), task

    crop = RandomCropPad((5, 7), generator=torch.Generator().manual_seed(2))(sample)
    assert crop["image"].shape == (3, 5, 7) and crop["targets"]["semseg"].shape == (5, 7)
    # The crop is one window, the same for the image and every target.
    found = [
        (top, left)
        for top in range(H - 4)
        for left in range(W - 6)
        if torch.equal(sample["image"][:, top : top + 5, left : left + 7], crop["image"])
    ]
    assert len(found) == 1
    top, left = found[0]
    for task, target in sample["targets"].items():
        assert torch.equal(crop["targets"][task], target[..., top : top + 5, left : left + 7])


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_scale_keeps_label_values_and_unit_normals(seed: int) -> None:
    sample = _sample(seed)
    out = RandomScale(0.5, 2.0, generator=torch.Generator().manual_seed(seed))(sample)
    h, w = out["image"].shape[-2:]
    assert (h, w) != (H, W) and h / H == pytest.approx(w / W, abs=0.1)
    for task, target in sample["targets"].items():
        scaled = out["targets"][task]
        assert scaled.shape[-2:] == (h, w) and scaled.dtype == target.dtype
        if task != "normals":
            assert set(scaled.unique().tolist()) <= set(target.unique().tolist()), task
    _assert_normals_unit_or_zero(out["targets"]["normals"])
    assert (out["targets"]["normals"].norm(dim=0) == 0).any()  # the invalid block survives


def test_resize_to_a_fixed_size() -> None:
    sample = _sample()
    out = Resize((7, 9))(sample)
    assert out["image"].shape == (3, 7, 9)
    assert out["targets"]["semseg"].shape == (7, 9) and out["targets"]["edges"].shape == (1, 7, 9)
    assert set(out["targets"]["semseg"].unique().tolist()) <= set(
        sample["targets"]["semseg"].unique().tolist()
    )
    _assert_normals_unit_or_zero(out["targets"]["normals"])
    same = Resize((H, W))(sample)
    assert torch.equal(same["targets"]["normals"], sample["targets"]["normals"])


def _pipeline(seed: int) -> Compose:
    g = torch.Generator().manual_seed(seed)
    return Compose(
        [
            RandomScale(0.5, 2.0, generator=g),
            RandomCropPad((10, 10), generator=g),
            RandomHorizontalFlip(generator=g),
            PhotometricJitter(0.3, 0.3, 0.3, 0.05, generator=g),
            Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
        ]
    )


def test_same_seed_same_output() -> None:
    sample = _sample()
    first, second = _pipeline(7)(sample), _pipeline(7)(sample)
    assert torch.equal(first["image"], second["image"])
    for task in sample["targets"]:
        assert torch.equal(first["targets"][task], second["targets"][task])
    outputs = [_pipeline(seed)(sample)["image"] for seed in range(4)]
    assert not all(torch.equal(outputs[0], o) for o in outputs[1:])


def test_jitter_changes_only_the_image() -> None:
    sample = _sample()
    out = PhotometricJitter(0.4, 0.4, 0.4, 0.1, generator=torch.Generator().manual_seed(0))(sample)
    assert out["image"].shape == sample["image"].shape
    assert not torch.equal(out["image"], sample["image"])
    assert 0 <= float(out["image"].min()) and float(out["image"].max()) <= 1
    for task, target in sample["targets"].items():
        assert torch.equal(out["targets"][task], target)


def test_normalize() -> None:
    sample = _sample()
    out = Normalize((0.5, 0.4, 0.3), (0.2, 0.1, 0.5))(sample)
    expected = (sample["image"] - torch.tensor([0.5, 0.4, 0.3]).view(3, 1, 1)) / torch.tensor(
        [0.2, 0.1, 0.5]
    ).view(3, 1, 1)
    assert torch.allclose(out["image"], expected)
    with pytest.raises(ValueError):
        Normalize((0.5,), (0.0,))


def _boxes_sample() -> Sample:
    rows = torch.tensor([[2.0, 3.0, 6.0, 8.0, 1.0], [12.0, 1.0, 16.0, 4.0, 0.0], [0, 0, 0, 0, -1]])
    return Sample(name="b", image=torch.rand(3, H, W), targets={"detection": rows}, labelled={})


def test_boxes_follow_flip_scale_and_resize() -> None:
    flipped = RandomHorizontalFlip(p=1.0)(_boxes_sample())["targets"]["detection"]
    assert flipped[0].tolist() == [W - 6.0, 3.0, W - 2.0, 8.0, 1.0]
    assert flipped[2].tolist() == [0, 0, 0, 0, -1]  # padding stays padding
    resized = Resize((2 * H, W))(_boxes_sample())["targets"]["detection"]
    assert resized[0].tolist() == [2.0, 6.0, 6.0, 16.0, 1.0]
    g = torch.Generator().manual_seed(0)
    scaled = RandomScale(2.0, 2.0, generator=g)(_boxes_sample())["targets"]["detection"]
    assert scaled[1].tolist() == [24.0, 2.0, 32.0, 8.0, 0.0]


def test_boxes_cropped_clipped_or_dropped() -> None:
    for seed in range(6):
        sample = _boxes_sample()
        sample["image"][0] = torch.arange(W).float()[None, :].expand(H, W) / W  # column ids
        out = RandomCropPad((H, 8), generator=torch.Generator().manual_seed(seed))(sample)
        left = round(float(out["image"][0, 0, 0]) * W)
        rows = out["targets"]["detection"]
        for before, after in zip(_boxes_sample()["targets"]["detection"], rows, strict=True):
            x1, x2 = (before[0] - left).clamp(0, 8), (before[2] - left).clamp(0, 8)
            if before[4] < 0 or x2 - x1 < 1:
                assert after.tolist() == [0, 0, 0, 0, -1]  # cut away: no object any more
            else:
                assert after.tolist() == [x1, before[1], x2, before[3], before[4]]
    padded = RandomCropPad((2 * H, 2 * W))(_boxes_sample())["targets"]["detection"]
    assert torch.equal(padded, _boxes_sample()["targets"]["detection"])  # padding moves nothing
