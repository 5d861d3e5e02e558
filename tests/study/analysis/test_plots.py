"""Every plot kind: what the figure draws equals its data, and PNG and SVG files are written."""

from __future__ import annotations

import io
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from study.analysis import KINDS, Plot, StudyResults, load_results, make_plot, save_figure
from study.analysis._labels import TASK_NAMES
from study.analysis._plots_runs import draw_weights


@pytest.fixture(scope="module")
def results(store: Path) -> StudyResults:
    return load_results(store)


@pytest.fixture(scope="module")
def plots(results: StudyResults) -> dict[str, Plot]:
    return {kind: make_plot(kind, results) for kind in KINDS}


@pytest.mark.parametrize("kind", KINDS)
def test_png_and_svg_are_written_at_the_figures_size(
    plots: dict[str, Plot], kind: str, tmp_path: Path
) -> None:
    figure = plots[kind].figure
    paths = save_figure(figure, tmp_path / "plots", kind)
    assert [p.name for p in paths] == [f"{kind}.png", f"{kind}.svg"]
    assert all(p.stat().st_size > 1000 for p in paths)
    image = matplotlib.image.imread(paths[0])
    width, height = figure.get_size_inches() * 150
    assert image.shape[0] == pytest.approx(height, abs=1)
    assert image.shape[1] == pytest.approx(width, abs=1)
    assert image.shape[0] > 300 and image.shape[1] > 600
    assert image[..., :3].std() > 0.05  # not a blank page
    root = ET.parse(paths[1]).getroot()
    assert root.tag.endswith("svg")
    # Only the two files: the temporary names were renamed.
    assert sorted(os.listdir(tmp_path / "plots")) == [f"{kind}.png", f"{kind}.svg"]


def test_saving_again_replaces_the_files_whole(plots: dict[str, Plot], tmp_path: Path) -> None:
    save_figure(plots["ranks"].figure, tmp_path, "ranks")
    save_figure(plots["pareto"].figure, tmp_path, "ranks")
    assert sorted(os.listdir(tmp_path)) == ["ranks.png", "ranks.svg"]
    assert matplotlib.image.imread(tmp_path / "ranks.png").shape[:2] == (750, 1200)


def _by_gid(figure: Figure, gid: str) -> list[Any]:
    return [a for a in figure.findobj() if a.get_gid() == gid]


def test_pareto_draws_every_point_and_the_front(plots: dict[str, Plot]) -> None:
    plot = plots["pareto"]
    data = plot.data
    assert data is not None
    (points,) = _by_gid(plot.figure, "points")
    drawn = np.array(sorted(map(tuple, np.asarray(points.get_offsets()))))
    want = np.array(sorted(zip(data["x"], data["y"], strict=True)))
    np.testing.assert_allclose(drawn, want)
    on_front = data[data["on_front"]].sort_values("x")
    (ringed,) = _by_gid(plot.figure, "front_points")
    np.testing.assert_allclose(np.asarray(ringed.get_offsets()), on_front[["x", "y"]])
    # The staircase joins the front, then runs on to the costliest trial.
    (front,) = _by_gid(plot.figure, "front")
    assert list(front.get_xdata()) == pytest.approx([*on_front["x"], data["x"].max()])
    assert list(front.get_ydata()) == pytest.approx([*on_front["y"], on_front["y"].iloc[-1]])
    ax = plot.figure.axes[0]
    assert ax.get_xlabel() == "inference GFLOPs per image ↓"
    assert ax.get_ylabel() == "Δm (%) ↑"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"amtl", "dwa", "ew", "hard_sharing", "rcm_resnet", "Pareto front"} <= set(labels)


def test_heatmap_cells_and_annotations_are_the_means(plots: dict[str, Plot]) -> None:
    plot = plots["heatmap"]
    cells = plot.data
    assert cells is not None
    (mesh,) = _by_gid(plot.figure, "cells")
    means = cells.pivot(index="method", columns="architecture", values="mean").sort_index()
    np.testing.assert_allclose(np.asarray(mesh.get_array()).reshape(means.shape), means)
    texts = {t.get_text() for t in plot.figure.axes[0].texts}
    for _, cell in cells.iterrows():
        assert f"{cell['mean']:+.2f}\n± {cell['std']:.2f} (2 seeds)" in texts


def test_ranks_bars_are_the_mean_ranks(plots: dict[str, Plot]) -> None:
    plot = plots["ranks"]
    summary = plot.data
    assert summary is not None
    ax = plot.figure.axes[0]
    widths = [p.get_width() for p in ax.patches]
    assert widths == pytest.approx(list(summary["mean_rank"]))
    assert [t.get_text() for t in ax.get_yticklabels()] == list(summary["method"])


def _means(data: pd.DataFrame, group: str, key: str) -> pd.Series:
    return data[data[group] == key].groupby("epoch")["value"].mean()


def test_curves_draw_each_methods_mean_per_epoch(plots: dict[str, Plot]) -> None:
    plot = plots["curves"]
    data = plot.data
    assert data is not None
    for task in ("semseg", "depth"):
        for method in ("ew", "dwa", "amtl"):
            (line,) = _by_gid(plot.figure, f"{task}:{method}")
            rows = data[data["task"] == task]
            want = _means(rows, "method", method)
            assert list(line.get_xdata()) == list(want.index)
            assert list(line.get_ydata()) == pytest.approx(list(want))
    titles = [ax.get_title() for ax in plot.figure.axes]
    assert titles[:2] == [TASK_NAMES["semseg"], TASK_NAMES["depth"]]
    assert [ax.get_ylabel() for ax in plot.figure.axes[:2]] == ["mIoU ↑", "RMSE (m) ↓"]


def test_weights_draw_each_tasks_mean_weight_per_method(plots: dict[str, Plot]) -> None:
    plot = plots["weights"]
    data = plot.data
    assert data is not None
    panels = [(m, "weight") for m in ("ew", "dwa", "amtl")] + [("amtl", "achievement")]
    for method, metric in panels:
        for task in ("semseg", "depth"):
            (line,) = _by_gid(plot.figure, f"{method}/{metric}:{task}")
            rows = data[(data["method"] == method) & (data["metric"] == metric)]
            assert list(line.get_ydata()) == pytest.approx(list(_means(rows, "task", task)))
    assert not _by_gid(plot.figure, "ew/achievement:semseg")


def test_parallel_lines_go_through_each_trials_positions(plots: dict[str, Plot]) -> None:
    plot = plots["parallel"]
    data = plot.data
    assert data is not None
    conditional = 0
    for trial_id, rows in data.groupby("trial_id"):
        (line,) = _by_gid(plot.figure, f"trial-{trial_id}")
        # Through the axes of the parameters the trial has, in order: another method's
        # parameters are passed by, neither drawn as 0 nor breaking the line.
        rows = rows.sort_values("axis")
        assert list(line.get_xdata()) == list(rows["axis"])
        np.testing.assert_allclose(np.asarray(line.get_ydata(), dtype=float), rows["position"])
        conditional += len(rows) < data["axis"].max() + 1
        stopped = rows["status"].iloc[0] == "stopped_early"
        assert (line.get_linestyle() == "--") == stopped
    assert conditional > 0  # some trials lack some axes (ew has no own parameters)


def test_importance_bars_are_the_importances(plots: dict[str, Plot]) -> None:
    plot = plots["importance"]
    data = plot.data
    assert data is not None
    assert (
        plot.note is not None and "'multi_task' in " in plot.note and "(2 completed)" in plot.note
    )
    ax = plot.figure.axes[0]
    want = data.sort_values("importance", ascending=False)
    assert [p.get_width() for p in ax.patches] == pytest.approx(list(want["importance"]))
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == [p.replace("/", ".") for p in want["param"]]


def _svg_dashes(figure: Figure, gid: str) -> str:
    """The ``stroke-dasharray`` the saved SVG gives the line named ``gid`` (none if solid)."""
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg")
    group = next(g for g in ET.fromstring(buffer.getvalue()).iter() if g.attrib.get("id") == gid)
    style = next(p for p in group.iter() if p.tag.endswith("path")).attrib["style"]
    found = re.search(r"stroke-dasharray: ([^;]+)", style)
    return found.group(1) if found else "none"


def test_curves_tell_methods_apart_by_marker_and_dashes_too(plots: dict[str, Plot]) -> None:
    """Not by colour alone: two methods whose colours a colour-vision deficiency merges
    still differ in marker and dash pattern, in the figure and in its SVG."""
    figure = plots["curves"].figure
    lines = {m: _by_gid(figure, f"semseg:{m}")[0] for m in ("amtl", "dwa", "ew")}
    assert len({line.get_marker() for line in lines.values()}) == 3
    dashes = {m: _svg_dashes(figure, f"semseg:{m}") for m in lines}
    assert len(set(dashes.values())) == 3, dashes
    # The shared legend shows the same marker and line for each method.
    legend = figure.legends[0]
    texts = [t.get_text() for t in legend.get_texts()]
    shown = dict(zip(texts, legend.legend_handles, strict=True))
    assert {m: shown[m].get_marker() for m in lines} == {
        m: line.get_marker() for m, line in lines.items()
    }


def test_pareto_points_are_translucent_under_an_outline(plots: dict[str, Plot]) -> None:
    """A point drawn over another leaves the one below visible: see-through fill, dark edge."""
    (points,) = _by_gid(plots["pareto"].figure, "points")
    faces, edges = np.asarray(points.get_facecolor()), np.asarray(points.get_edgecolor())
    assert (faces[:, 3] < 1).all()
    assert (np.asarray(points.get_linewidths()) > 0).all()
    assert (edges[:, :3] < 0.3).all()  # dark, whatever the method's colour
    assert (np.abs(faces[:, :3] - edges[:, :3]).max(axis=1) > 0.2).all()


def test_pareto_of_one_architecture_has_no_architecture_legend(store: Path) -> None:
    plot = make_plot("pareto", load_results(store / "hard_sharing-seed0"))
    ax = plot.figure.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["method", "amtl", "dwa", "ew", "Pareto front"]
    assert "(architecture: hard_sharing)" in ax.get_title()


def test_achievement_bands_stay_between_0_and_1() -> None:
    """mean ± sd of achievements in [0, 1] can pass 1 and 0: the band is clipped there."""
    spread = {"semseg": [1.0, 0.4, 0.98], "depth": [0.0, 0.3, 0.02]}  # mean + sd > 1; − sd < 0
    rows = [
        {"trial_id": f"t{i}", "method": "amtl", "task": task, "epoch": epoch, "metric": metric,
         "value": values[i] if metric == "achievement" else 0.5}
        for task, values in spread.items()
        for i in range(3)
        for epoch in (1, 2)
        for metric in ("weight", "achievement")
    ]  # fmt: skip
    figure = draw_weights(pd.DataFrame(rows))
    for task, values in spread.items():
        mean, sd = np.mean(values), np.std(values, ddof=1)
        assert mean + sd > 1 or mean - sd < 0
        (band,) = _by_gid(figure, f"amtl/achievement-band:{task}")
        ys = np.concatenate([p.vertices[:, 1] for p in band.get_paths()])
        assert ys.min() >= 0 and ys.max() <= 1
        assert ys.max() == pytest.approx(min(1, mean + sd))
        assert ys.min() == pytest.approx(max(0, mean - sd))
        (line,) = _by_gid(figure, f"amtl/achievement:{task}")
        assert list(line.get_ydata()) == pytest.approx([mean, mean])
