"""Partially labelled batches: an unlabelled task adds no loss, no gradient, no zero to a mean."""

from collections.abc import Iterator

import pytest
import torch

from search_spaces import load_space
from study.run import Batch, TensorSplit, TrialRunner, TrialSetup
from study.spec import DatasetSpec, StudySpec

POTENTIALS = {"semseg": 0.5, "depth": 0.6}


def _runner(method: str) -> TrialRunner:
    spec = StudySpec(
        name="t",
        tasks=["semseg", "depth"],
        dataset=DatasetSpec(image_size=32, train_samples=16, val_samples=8),
        batch_size=8,
        baselines="none",
    )
    config = load_space("default").default_config(method)
    config["model"]["head_channels"] = 8
    config["optim"]["weight_decay"] = 0.0  # so a zero gradient leaves a weight exactly as it was
    setup = TrialSetup(spec=spec, tasks=tuple(spec.tasks), potentials=POTENTIALS)
    return TrialRunner(setup, config)


class _DepthUnlabelled:
    """The same scenes, with depth labelled for the first ``labelled`` samples only."""

    def __init__(self, split: TensorSplit, labelled: int) -> None:
        self.split, self.labelled = split, labelled

    def __len__(self) -> int:
        return len(self.split)

    def batches(self, batch_size: int, seed: int | None) -> Iterator[Batch]:
        start = 0
        for images, targets, labelled in self.split.batches(batch_size, None):
            mask = torch.arange(start, start + len(images)) < self.labelled
            start += len(images)
            depth = torch.where(mask[:, None, None, None], targets["depth"], 0.0)
            yield images, {**targets, "depth": depth}, {**labelled, "depth": mask}


@pytest.mark.parametrize("method", ["ew", "gls", "uw", "amtl", "mgda", "gradnorm"])
def test_an_unlabelled_task_contributes_exactly_zero_gradient(method: str) -> None:
    runner = _runner(method)
    images, targets, _ = next(_DepthUnlabelled(runner.train, 0).batches(8, None))
    heads = runner.engine.module.heads
    before = {t: [p.detach().clone() for p in heads[t].parameters()] for t in ("semseg", "depth")}
    losses = runner.train_step(images, targets)
    assert losses[1] == 0 and losses[0] > 0
    after = {t: list(heads[t].parameters()) for t in ("semseg", "depth")}
    assert all(torch.equal(a, b) for a, b in zip(before["depth"], after["depth"], strict=True))
    assert not all(
        torch.equal(a, b) for a, b in zip(before["semseg"], after["semseg"], strict=True)
    )
    assert runner.balancer.last_weights[1] == 0 or method in ("ew", "uw", "mgda", "gradnorm")


def test_epoch_means_and_label_counts_skip_unlabelled_samples() -> None:
    runner = _runner("dwa")
    runner.train = _DepthUnlabelled(runner.train, 8)
    report = runner.run_epoch()
    assert (report["labels/semseg"], report["labels/depth"]) == (16, 8)
    assert report["train_loss/depth"] > 0

    runner.train = _DepthUnlabelled(runner.train.split, 0)
    report = runner.run_epoch()
    assert report["labels/depth"] == 0
    assert report["train_loss/depth"] != report["train_loss/depth"]  # NaN, not 0
    runner.run_epoch()  # DWA reads a ratio with no depth loss in it, and stays finite
    assert torch.isfinite(runner.balancer.last_weights).all()
