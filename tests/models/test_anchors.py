from __future__ import annotations

import math

import torch

from models._anchors import anchors_per_location, decode, encode, feature_sizes, ssd_anchors


def test_anchor_count_matches_the_levels() -> None:
    anchors = ssd_anchors(64, 96)
    grids = feature_sizes(64, 96, (8, 16, 32, 64))
    assert grids == [(8, 12), (4, 6), (2, 3), (1, 2)]
    assert anchors_per_location((2.0,)) == 3
    assert anchors.shape == (3 * sum(h * w for h, w in grids), 4)
    assert ssd_anchors(65, 65).shape[0] == 3 * (9 * 9 + 5 * 5 + 3 * 3 + 2 * 2)


def test_first_level_positions_and_shapes() -> None:
    anchors = ssd_anchors(16, 24, sizes=(32, 64), steps=(8, 16))
    # Level 0 is 2×3 locations × 3 shapes, row-major then shape.
    first = anchors[: 2 * 3 * 3].reshape(2, 3, 3, 4)
    r = math.sqrt(2.0)
    shapes = torch.tensor([[32.0, 32.0], [32 * r, 32 / r], [32 / r, 32 * r]])
    for i in range(2):
        for j in range(3):
            centre = torch.tensor([(j + 0.5) * 8, (i + 0.5) * 8])
            boxes = first[i, j]
            assert torch.allclose((boxes[:, :2] + boxes[:, 2:]) / 2, centre.expand(3, 2))
            assert torch.allclose(boxes[:, 2:] - boxes[:, :2], shapes, atol=1e-5)
    assert torch.allclose(anchors[0], torch.tensor([-12.0, -12.0, 20.0, 20.0]))
    # Level 1 starts right after: one row of 2 locations, centre (8, 8).
    assert torch.allclose(anchors[18], torch.tensor([-24.0, -24.0, 40.0, 40.0]))
    assert anchors.shape[0] == 18 + 2 * 3


def test_clip_keeps_anchors_in_the_image() -> None:
    anchors = ssd_anchors(32, 48, clip=True)
    assert anchors[:, 0::2].min() >= 0 and anchors[:, 0::2].max() <= 48
    assert anchors[:, 1::2].min() >= 0 and anchors[:, 1::2].max() <= 32


def test_encode_decode_round_trip() -> None:
    generator = torch.Generator().manual_seed(0)
    anchors = ssd_anchors(64, 64)
    xy = torch.rand(anchors.shape[0], 2, generator=generator) * 60
    wh = torch.rand(anchors.shape[0], 2, generator=generator) * 100 + 1
    boxes = torch.cat([xy, xy + wh], dim=1)
    deltas = encode(boxes, anchors)
    assert torch.allclose(decode(deltas, anchors), boxes, atol=1e-3)
    # Batched deltas broadcast against the anchors.
    batched = decode(deltas.expand(2, -1, -1), anchors, (0.1, 0.2))
    assert batched.shape == (2, anchors.shape[0], 4)


def test_zero_deltas_decode_to_the_anchors() -> None:
    anchors = ssd_anchors(40, 56)
    assert torch.allclose(decode(torch.zeros_like(anchors), anchors), anchors, atol=1e-5)
    assert torch.allclose(encode(anchors, anchors), torch.zeros_like(anchors), atol=1e-5)
    assert torch.isfinite(decode(torch.full_like(anchors, 1e4), anchors)).all()
