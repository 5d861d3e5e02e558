"""Streaming, all-reducible metrics for the dense tasks of :mod:`models.tasks`, and Δm.

A meter never holds predictions: each ``update`` folds a batch into a fixed-size float64
vector of sums and counts (:meth:`TaskMeter.state`). Summing those vectors across
data-parallel ranks gives exactly what one process would get over all the data, so
:meth:`MultiTaskMeter.all_reduce` is one ``all_reduce(SUM)`` of one tensor.

Where benchmarks score a task differently, :class:`MetricOptions` picks the protocol:
detection's mAP by COCO or PASCAL VOC (:class:`DetectionMeter`), edges' odsF by the BSDS
protocol with its matching distance and threshold sweep (:class:`EdgesMeter`), and an
optional depth cap (:class:`DepthMeter`).

Conventions when there is nothing to score: semseg, human_parts, depth and normals report
NaN when no pixel was valid; the binary scores (edges ``odsf``, saliency ``max_f`` and
``iou``) are 0 when undefined. Definitions and tolerances are in each meter's docstring.
"""

from typing import TYPE_CHECKING

from study.exports import lazy_exports

if TYPE_CHECKING:
    from study.metrics._ap import DETECTION_PROTOCOLS, DetectionProtocol
    from study.metrics._dense import ANGLE_BIN_DEGREES, DepthMeter, NormalsMeter, SemsegMeter
    from study.metrics._detection import DetectionMeter
    from study.metrics._edges import EDGE_MAX_DIST, EDGE_THRESHOLDS, EdgesMeter, edge_tolerance
    from study.metrics._meter import TaskMeter
    from study.metrics._multi_task import MetricOptions, MultiTaskMeter, create_meter, delta_m
    from study.metrics._saliency import SaliencyMeter
    from study.metrics._thin import thin_stack

__all__, __getattr__, __dir__ = lazy_exports(__name__, __file__)
