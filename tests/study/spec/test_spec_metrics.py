"""The spec's ``metrics``: each protocol's options, the detection protocol by dataset."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from search_spaces import MAX_MESSAGE
from study.metrics import MetricOptions
from study.run._setup import TrialSetup
from study.spec import DatasetSpec, MetricsSpec, SpecError, StudySpec, load_spec

VALID = "name: s1\ntasks: [semseg, depth, edges]\ntrials: 4\n"


def test_defaults_are_coco_bsds_at_0_0075_with_19_thresholds_and_no_depth_cap() -> None:
    spec = StudySpec(name="s", tasks=["semseg", "detection"])
    options = TrialSetup(spec, tuple(spec.tasks)).metric_options
    assert options == MetricOptions(
        detection_protocol="coco", edge_max_dist=0.0075, edge_thresholds=19, max_depth=None
    )


def test_voc_detection_labels_default_to_voc12() -> None:
    voc = DatasetSpec(name="voc", root="data/voc", num_classes=21)
    assert MetricsSpec().for_dataset(voc).detection_protocol == "voc12"
    mix = DatasetSpec.model_validate(
        {"num_classes": 21, "parts": [{"name": "voc", "root": "data/voc", "tasks": ["detection"]}]}
    )
    assert MetricsSpec().for_dataset(mix).detection_protocol == "voc12"
    # A part that does not label detection does not decide it.
    nyud_part = DatasetSpec.model_validate(
        {
            "num_classes": 40,
            "parts": [
                {"name": "nyud", "root": "data/nyud", "tasks": ["depth"]},
                {"name": "synthetic", "tasks": ["detection"], "train_samples": 4, "val_samples": 4},
            ],
        }
    )
    assert MetricsSpec().for_dataset(nyud_part).detection_protocol == "coco"
    # Said explicitly, the spec's protocol stands whatever the data.
    assert MetricsSpec(detection_protocol="voc07").for_dataset(voc).detection_protocol == "voc07"
    assert MetricsSpec(detection_protocol="coco").for_dataset(voc).detection_protocol == "coco"


def test_options_from_a_spec_file_reach_the_trial(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(
        VALID + "metrics: {detection_protocol: voc07, edge_max_dist: 0.011, "
        "edge_thresholds: 99, max_depth: 10}\n"
    )
    spec, _ = load_spec(path)
    assert TrialSetup(spec, tuple(spec.tasks)).metric_options == MetricOptions(
        detection_protocol="voc07", edge_max_dist=0.011, edge_thresholds=99, max_depth=10.0
    )


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("{detection_protocol: voc}", "field 'metrics.detection_protocol'"),
        ("{edge_max_dist: 0}", "field 'metrics.edge_max_dist'"),
        ("{edge_thresholds: 0}", "field 'metrics.edge_thresholds'"),
        ("{max_depth: -1}", "field 'metrics.max_depth'"),
        ("{max_dist: 0.01}", "field 'metrics.max_dist'"),
    ],
)
def test_a_bad_metric_option_is_one_line(tmp_path: Path, field: str, expected: str) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(VALID + f"metrics: {field}\n")
    start = time.perf_counter()
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert time.perf_counter() - start < 2.0
    message = str(caught.value)
    assert "\n" not in message and len(message) <= MAX_MESSAGE and expected in message, message
