"""Edges' odsF by the BSDS protocol, on cases whose precision and recall are worked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.tasks import IGNORE_INDEX, get_task
from study.metrics import (
    EDGE_MAX_DIST,
    EDGE_THRESHOLDS,
    EdgesMeter,
    MetricOptions,
    create_meter,
    edge_tolerance,
)
from study.metrics._edges import _matched_by_graph, edge_thresholds, matched_edge_pixels

TASK = get_task("edges", 5)
SURE, UNSURE, OFF = 0.9, 0.3, 1e-6  # probabilities of predicted pixels


def _logits(probs: np.ndarray) -> torch.Tensor:
    p = torch.from_numpy(probs).double()
    return torch.log(p / (1 - p)).float()[None, None]


def _odsf(probs: np.ndarray, truth: np.ndarray, **kwargs: float) -> float:
    meter = EdgesMeter(TASK, **kwargs)  # type: ignore[arg-type]
    meter.update(_logits(probs), torch.from_numpy(truth).float()[None, None])
    return meter.compute()["odsf"]


def _max_dist(radius: float, height: int, width: int) -> float:
    """The ``max_dist`` whose radius on an image of this size is ``radius`` pixels."""
    return radius / math.hypot(height, width)


def _vertical(height: int, width: int, column: int, rows: range, value: float) -> np.ndarray:
    out = np.full((height, width), OFF)
    out[rows.start : rows.stop, column] = value
    return out


def _line(height: int, width: int, column: int, rows: range) -> np.ndarray:
    return (_vertical(height, width, column, rows, 1.0) == 1.0).astype(np.float64)


def test_the_default_radius_is_three_quarters_of_a_percent_of_the_diagonal() -> None:
    assert EDGE_MAX_DIST == 0.0075
    assert edge_tolerance(512, 512) == pytest.approx(0.0075 * 512 * math.sqrt(2))  # 5.43 px
    assert edge_tolerance(64, 64) == pytest.approx(0.679, abs=1e-3)  # only exact hits
    assert edge_thresholds(3).tolist() == [0.25, 0.5, 0.75]
    assert edge_thresholds(99)[[0, -1]].tolist() == [0.01, 0.99]  # BSDS's sweep


@pytest.mark.parametrize(("offset", "expected"), [(0, 1.0), (5, 1.0), (6, 0.0)])
def test_a_line_offset_within_and_beyond_max_dist_at_512_pixels(
    offset: int, expected: float
) -> None:
    # A 100-pixel vertical line; the prediction is the same line moved sideways. At
    # 512 × 512 the radius is 0.0075 · 724.1 = 5.43 px: every pixel of the line moved by
    # 5 px has its own true pixel 5 px away (P = R = 1, F = 1); moved by 6 px, none is
    # within reach (P = R = 0, F = 0).
    truth = _line(512, 512, 200, range(100, 200))
    pred = _vertical(512, 512, 200 + offset, range(100, 200), SURE)
    assert _odsf(pred, truth, thresholds=1) == expected


def test_matching_is_one_to_one() -> None:
    # A true line of 10 px at column 5; predicted lines at columns 4 and 6 (20 px), both
    # 1 px away, radius 1.5 px. Each true pixel takes one predicted pixel: 10 pairs.
    # P = 10/20, R = 10/10, F = 2 · 1/2 · 1 / (3/2) = 2/3. (A many-to-one rule would give
    # P = 1 and F = 1.)
    truth = _line(14, 12, 5, range(2, 12))
    pred = np.maximum(
        _vertical(14, 12, 4, range(2, 12), SURE), _vertical(14, 12, 6, range(2, 12), SURE)
    )
    assert _odsf(pred, truth, max_dist=_max_dist(1.5, 14, 12)) == pytest.approx(2 / 3)
    assert matched_edge_pixels(pred > 0.5, truth > 0.5, 1.5) == 10


@pytest.mark.parametrize("radius", [0.0, 0.68, 0.999])
def test_under_a_pixel_the_matching_is_the_overlap(radius: float) -> None:
    # The shortcut against the full matching, on maps where neighbours abound.
    rng = np.random.default_rng(1)
    pred, truth = rng.random((2, 40, 50)) > 0.6
    expected = _matched_by_graph(pred, truth, radius)
    assert expected == np.count_nonzero(pred & truth) > 0
    assert matched_edge_pixels(pred, truth, radius) == expected
    # One pixel or more away, neighbours match too.
    assert _matched_by_graph(pred, truth, 1.0) > expected


def test_a_thick_prediction_is_thinned_first() -> None:
    # A 3-pixel-wide band (columns 4-6, rows 2-11: 30 px) over a true line at column 5
    # (rows 2-11: 10 px). Thinning (Guo-Hall, as MATLAB's bwmorph 'thin') peels the band
    # to its middle column and takes one pixel off each end: column 5, rows 3-10, 8 px.
    # With radius 1.5, all 8 match: P = 8/8, R = 8/10, F = 2 · 0.8 / 1.8 = 8/9.
    # Unthinned, the 30 px would give P = 10/30 and F = 1/2.
    truth = _line(14, 12, 5, range(2, 12))
    band = np.full((14, 12), OFF)
    band[2:12, 4:7] = SURE
    assert _odsf(band, truth, max_dist=_max_dist(1.5, 14, 12)) == pytest.approx(8 / 9)


def test_ods_takes_one_threshold_for_the_whole_dataset() -> None:
    # Thresholds 0.25, 0.5, 0.75. Image 1: a true 10-px line predicted at 0.3. Image 2: a
    # true 10-px line predicted at 0.9, and a false 10-px line 5 px away (radius 1.5) at 0.3.
    #   t = 0.25: matched 10 + 10, predicted 10 + 20, truth 20 → P 2/3, R 1, F 4/5
    #   t = 0.50: matched 0 + 10, predicted 0 + 10, truth 20  → P 1, R 1/2, F 2/3
    #   t = 0.75: the same as 0.50
    # ODS = 4/5 (each image at its own best threshold would score F = 1).
    max_dist = _max_dist(1.5, 14, 12)
    truth = torch.from_numpy(_line(14, 12, 5, range(2, 12))).float()[None, None]
    first = _vertical(14, 12, 5, range(2, 12), UNSURE)
    second = np.maximum(
        _vertical(14, 12, 5, range(2, 12), SURE), _vertical(14, 12, 10, range(2, 12), UNSURE)
    )
    meter = EdgesMeter(TASK, max_dist=max_dist, thresholds=3)
    meter.update(_logits(first), truth)
    meter.update(_logits(second), truth)
    assert meter.compute()["odsf"] == pytest.approx(4 / 5)
    # The state sums over images: one update of both is the same.
    both = EdgesMeter(TASK, max_dist=max_dist, thresholds=3)
    both.update(torch.cat([_logits(first), _logits(second)]), torch.cat([truth, truth]))
    assert both.state().tolist() == meter.state().tolist() == [20, 10, 10, 30, 10, 10, 20]


def test_ignored_pixels_are_neither_predictions_nor_truth() -> None:
    # The true line's lower half (rows 7-11) is ignored, and a confident false line sits at
    # column 9 in the ignored rows only: 5 true pixels, 5 predicted and matched → F = 1.
    truth = _line(14, 12, 5, range(2, 12))
    truth[7:12] = IGNORE_INDEX
    pred = np.maximum(
        _vertical(14, 12, 5, range(2, 12), SURE), _vertical(14, 12, 9, range(7, 12), SURE)
    )
    assert _odsf(pred, truth, max_dist=_max_dist(1.5, 14, 12)) == 1.0
    # Nothing to find and nothing found is 0, not NaN.
    assert _odsf(np.full((14, 12), OFF), np.zeros((14, 12))) == 0.0


def test_options_reach_the_meter_and_bad_ones_are_refused() -> None:
    meter = create_meter(TASK, MetricOptions(edge_max_dist=0.01, edge_thresholds=5))
    assert isinstance(meter, EdgesMeter)
    assert (meter.max_dist, meter.thresholds, meter.state().numel()) == (0.01, 5, 11)
    default = create_meter(TASK)
    assert (default.max_dist, default.thresholds) == (EDGE_MAX_DIST, EDGE_THRESHOLDS)  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="edges: thresholds must be at least 1, got 0"):
        EdgesMeter(TASK, thresholds=0)
    with pytest.raises(ValueError, match="edges: max_dist must be ≥ 0"):
        EdgesMeter(TASK, max_dist=-0.1)
