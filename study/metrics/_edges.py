"""Edge detection's odsF by the BSDS protocol: thinned predictions, one-to-one matching."""

from __future__ import annotations

import math

import numpy as np
import torch

from models.tasks import IGNORE_INDEX, Task
from study.metrics._meter import _F64, TaskMeter, _check_shape
from study.metrics._thin import thin_stack

__all__ = [
    "EDGE_MAX_DIST",
    "EDGE_THRESHOLDS",
    "EdgesMeter",
    "edge_tolerance",
    "edge_thresholds",
    "matched_edge_pixels",
]

#: BSDS / SEISM ``maxDist``: the matching distance as a fraction of the image diagonal, as
#: the multi-task literature evaluates PASCAL-Context (≈ 5.4 px at 512 × 512).
EDGE_MAX_DIST = 0.0075
#: Thresholds swept per evaluation. BSDS sweeps 99; every threshold matches every image
#: once, so an evaluation each epoch sweeps fewer by default.
EDGE_THRESHOLDS = 19


def edge_tolerance(height: int, width: int, max_dist: float = EDGE_MAX_DIST) -> float:
    """The matching radius in pixels: ``max_dist`` × the image diagonal (BSDS's ``maxDist``).

    Unrounded, as BSDS compares Euclidean distances with it: 0.0075 gives ≈ 5.43 px at
    512 × 512 and ≈ 0.68 px at 64 × 64, where only coinciding pixels match.
    """
    return max_dist * math.hypot(height, width)


def edge_thresholds(count: int) -> np.ndarray:
    """``count`` probability thresholds k/(count + 1), k = 1..count (BSDS's spacing)."""
    return np.arange(1, count + 1, dtype=np.float64) / (count + 1)


def matched_edge_pixels(predicted: np.ndarray, truth: np.ndarray, radius: float) -> int:
    """Pairs in a largest one-to-one matching of predicted to ground-truth edge pixels, each
    pair at most ``radius`` apart (Euclidean), of two boolean (H, W) maps.

    BSDS's ``correspondPixels`` finds the cheapest matching where leaving a pixel unmatched
    costs more than any match, so its number of pairs is this maximum (SciPy's Hopcroft-Karp
    on the sparse graph of the pairs within reach, found by k-d trees).
    """
    if not predicted.any() or not truth.any():
        return 0
    if radius < 1:
        # Within less than a pixel only a pixel itself is in reach: the matching is the overlap.
        return int(np.count_nonzero(predicted & truth))
    return _matched_by_graph(predicted, truth, radius)


def _matched_by_graph(predicted: np.ndarray, truth: np.ndarray, radius: float) -> int:
    # SciPy's graph and spatial modules load on first use: most processes that import the
    # meters never score edges.
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import maximum_bipartite_matching
    from scipy.spatial import cKDTree

    ours, theirs = np.argwhere(predicted), np.argwhere(truth)
    pairs = cKDTree(ours).sparse_distance_matrix(cKDTree(theirs), radius, output_type="ndarray")
    # Pixels in raster order make long augmenting paths for SciPy's greedy start; relabelled
    # in a fixed random order the search is several times faster. The size is the same.
    shuffle = np.random.default_rng(0)
    rows = shuffle.permutation(len(ours))[pairs["i"]]
    cols = shuffle.permutation(len(theirs))[pairs["j"]]
    graph = csr_matrix(
        (np.ones(pairs.size, dtype=np.int8), (rows, cols)), shape=(len(ours), len(theirs))
    )
    return int((maximum_bipartite_matching(graph, perm_type="column") >= 0).sum())


def _mosaic(images: np.ndarray, frame: int) -> np.ndarray:
    """(B, H, W) maps side by side in one (H + 2·frame, B·(W + 2·frame)) map, each in a frame
    of zeros."""
    framed = np.pad(images, ((0, 0), (frame, frame), (frame, frame)))
    return np.concatenate(list(framed), axis=1)


class EdgesMeter(TaskMeter):
    """``odsf``: the F-measure at the best dataset-wide threshold (ODS), by the BSDS protocol.

    At each of ``thresholds`` probabilities k/(n + 1) (:func:`edge_thresholds`) the predicted
    edge map ``sigmoid(logit) > t`` is thinned to one-pixel-wide lines (Guo–Hall thinning,
    pixel for pixel scikit-image's ``thin`` and MATLAB's ``bwmorph(·, 'thin', inf)``), then
    its pixels are matched one-to-one to ground-truth edge pixels at most ``max_dist`` × the
    image diagonal apart (:func:`matched_edge_pixels`). Over the whole dataset, precision
    is matched / predicted (thinned) pixels and recall matched / ground-truth pixels at each
    threshold; odsF = max over thresholds of 2PR / (P + R). The ground truth is used as it is, not
    thinned. Pixels marked 255 are neither predictions nor ground truth.

    BSDS's own benchmark code also interpolates P and R linearly between neighbouring
    thresholds before taking the maximum; this meter takes the maximum at the swept
    thresholds, so its odsF is at most that, and the gap shrinks as ``thresholds`` grows.
    """

    def __init__(
        self, task: Task, max_dist: float = EDGE_MAX_DIST, thresholds: int = EDGE_THRESHOLDS
    ) -> None:
        if not max_dist >= 0:
            raise ValueError(f"edges: max_dist must be ≥ 0, got {max_dist}")
        if thresholds < 1:
            raise ValueError(f"edges: thresholds must be at least 1, got {thresholds}")
        self.max_dist = max_dist
        self.thresholds = thresholds
        super().__init__(task)

    def _state_size(self) -> int:
        # matched pixels, then thinned predicted pixels, at each threshold; ground-truth pixels
        return 2 * self.thresholds + 1

    def _batch_sums(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_shape("edges", pred, target, 1)
        if target.shape[1] != 1:
            raise ValueError(f"edges: target must be (B, 1, H, W), got {tuple(target.shape)}")
        from scipy.ndimage import distance_transform_edt  # on first use, as above

        radius = edge_tolerance(*pred.shape[-2:], self.max_dist)
        valid = target != IGNORE_INDEX
        truth = ((target > 0.5) & valid)[:, 0].cpu().numpy()
        prob = torch.sigmoid(pred.to(_F64)).masked_fill(~valid, 0.0)[:, 0].cpu().numpy()
        # The batch as one row of tiles, each framed by zeros wider than the radius: thinning
        # (3×3 neighbourhoods) and matching never reach across a frame, so each threshold
        # costs one matching for the batch and the counts are those of image by image.
        frame = math.ceil(radius) + 2
        prob, edges = _mosaic(prob, frame), _mosaic(truth, frame)
        # A predicted pixel farther than the radius from every true one never matches:
        # thinning sees the whole map, matching only the pixels that can match.
        far = radius >= 1 and edges.any()
        reachable = distance_transform_edt(~edges) <= radius if far else edges
        lines = thin_stack(prob > edge_thresholds(self.thresholds)[:, None, None])
        predicted = lines.sum(axis=(1, 2)).astype(np.float64)
        matched = np.array(
            [matched_edge_pixels(at & reachable, edges, radius) for at in lines], dtype=np.float64
        )
        total = np.array([float(truth.sum())])
        sums = np.concatenate([matched, predicted, total])
        return torch.from_numpy(sums).to(device=pred.device, dtype=_F64)

    def _metrics(self, sums: list[float]) -> dict[str, float]:
        n = self.thresholds
        matched, predicted = np.array(sums[:n]), np.array(sums[n : 2 * n])
        truth = sums[2 * n]
        precision = np.divide(matched, predicted, out=np.zeros(n), where=predicted > 0)
        recall = matched / truth if truth > 0 else np.zeros(n)
        both = precision + recall
        f = np.divide(2 * precision * recall, both, out=np.zeros(n), where=both > 0)
        return {"odsf": float(f.max())}
