"""Seaborn figures of the search's runs: validation curves, task weights, parallel
coordinates of the sampled hyperparameters, and search strategies' anytime curves (styles
and colours from :mod:`._plots`)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from study.analysis._labels import TASK_NAMES, column_label, metric_label
from study.analysis._plots import method_colors, method_lines, style

__all__ = ["draw_anytime", "draw_curves", "draw_parallel", "draw_weights"]


def _columns(count: int) -> int:
    """Panels per row: 2 for 4 (a 2 × 2 grid), else up to 3."""
    return 2 if count == 4 else min(3, count)


def _grid(fig: Figure, count: int, cols: int) -> list[Axes]:
    rows = -(-count // cols)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[count:]:
        ax.set_visible(False)
    return list(axes[:count])


def _shared_legend(fig: Figure, axes: list[Axes], title: str, order: Sequence[str]) -> None:
    """One legend for all panels, in ``order``, from whichever panel drew each entry."""
    found: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            found.setdefault(label, handle)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    labels = [label for label in order if label in found]
    handles = [found[label] for label in labels]
    fig.legend(handles, labels, title=title, loc="outside right center", frameon=False)


def _tag_lines(ax: Axes, palette: dict[str, tuple[float, float, float]], prefix: str) -> None:
    """Name each drawn mean line after its hue (``gid``, an ``id`` in the SVG)."""
    for line in ax.lines:
        if len(line.get_xdata()) == 0:
            continue  # a legend proxy
        for name, color in palette.items():
            if np.allclose(mpl.colors.to_rgb(line.get_color()), color):
                line.set_gid(f"{prefix}{name}")


def draw_curves(data: pd.DataFrame) -> Figure:
    """Per task, its headline validation metric over epochs: per method the mean over its
    trials with a ±1 sd band. Methods differ in marker and dash pattern as well as colour."""
    tasks = list(dict.fromkeys(data["task"]))
    colors = method_colors(data["method"])
    markers, dashes = method_lines(data["method"])
    with style():
        cols = _columns(len(tasks))
        rows = -(-len(tasks) // cols)
        fig = Figure(layout="constrained", figsize=(4.2 * cols + 1.6, 3.4 * rows + 0.6))
        axes = _grid(fig, len(tasks), cols)
        for ax, task in zip(axes, tasks, strict=True):
            rows_t = data[data["task"] == task]
            metric = rows_t["metric"].iloc[0]
            sns.lineplot(
                data=rows_t,
                x="epoch",
                y="value",
                hue="method",
                style="method",
                hue_order=list(colors),
                style_order=list(colors),
                palette=colors,
                markers=markers,
                dashes=dashes,
                errorbar="sd",
                ax=ax,
            )
            _tag_lines(ax, colors, f"{task}:")
            ax.set_title(TASK_NAMES.get(task, task))
            ax.set_xlabel("epoch")
            ax.set_ylabel(metric_label(task, metric, with_task=False))
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        _shared_legend(fig, axes, "method", list(colors))
        fig.suptitle(
            "Validation metric per epoch (mean ± sd over a method's trials)", fontweight="bold"
        )
    return fig


def _achievement_bands(
    ax: Axes,
    rows: pd.DataFrame,
    colors: dict[str, tuple[float, float, float]],
    names: dict[str, str],
    method: str,
) -> None:
    """Each task's mean ± sd band of achievements, clipped to what an achievement can be:
    at least 0 (a KPI is), and at most 1 (the potential) unless a trial passed it."""
    top = max(1.0, float(rows["value"].max()))
    for task, color in colors.items():
        stats = rows[rows["task"] == names[task]].groupby("epoch")["value"].agg(["mean", "std"])
        if stats.empty:
            continue
        spread = stats["std"].fillna(0)  # one trial: no band
        ax.fill_between(
            stats.index,
            np.clip(stats["mean"] - spread, 0.0, top),
            np.clip(stats["mean"] + spread, 0.0, top),
            color=color,
            alpha=0.2,
            linewidth=0,
            gid=f"{method}/achievement-band:{task}",
        )
    ax.axhline(1.0, color="0.35", linewidth=0.9, linestyle=":", zorder=1, gid="potential")


def draw_weights(data: pd.DataFrame) -> Figure:
    """Per balancing method, each task's weight over epochs (mean ± sd over its trials),
    and, for methods that keep them, each task's achievement below."""
    panels = [(m, "weight") for m in sorted(data["method"].unique())]
    achieved = data[data["metric"] == "achievement"]
    panels += [(m, "achievement") for m in sorted(achieved["method"].unique())]
    tasks = list(dict.fromkeys(data["task"]))
    names = {t: TASK_NAMES.get(t, t) for t in tasks}
    shown = data.assign(task=data["task"].map(names))
    palette = dict(zip(names.values(), sns.color_palette("colorblind", len(tasks)), strict=True))
    labels = {"weight": "task weight", "achievement": "achievement (KPI ÷ potential)"}
    with style():
        cols = _columns(len(panels))
        rows = -(-len(panels) // cols)
        fig = Figure(layout="constrained", figsize=(4.2 * cols + 1.8, 3.3 * rows + 0.9))
        axes = _grid(fig, len(panels), cols)
        for ax, (method, metric) in zip(axes, panels, strict=True):
            rows = shown[(shown["method"] == method) & (shown["metric"] == metric)]
            sns.lineplot(
                data=rows,
                x="epoch",
                y="value",
                hue="task",
                style="task",
                hue_order=list(palette),
                style_order=list(palette),
                palette=palette,
                markers=True,
                dashes=True,
                errorbar="sd" if metric == "weight" else None,
                ax=ax,
            )
            _tag_lines(ax, {t: palette[names[t]] for t in tasks}, f"{method}/{metric}:")
            if metric == "achievement":
                colors = {t: palette[names[t]] for t in tasks}
                _achievement_bands(ax, rows, colors, names, method)
            ax.set_title(f"method: {method}" + ("" if metric == "weight" else ", achievements"))
            ax.set_xlabel("epoch")
            ax.set_ylabel(labels[metric])
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        _shared_legend(fig, axes, "task", list(palette))
        fig.suptitle(
            "Task weights (and achievements) over training, mean ± sd over a method's trials",
            fontweight="bold",
        )
    return fig


def draw_parallel(data: pd.DataFrame) -> Figure:
    """Parallel coordinates: each trial a line over its hyperparameters, coloured by Δm."""
    color = data.attrs.get("color", "delta_m")
    axes_order = data[["axis", "param"]].drop_duplicates().sort_values("axis")
    params = list(axes_order["param"])
    positions = data.pivot_table(
        index="trial_id", columns="axis", values="position", aggfunc="first"
    ).reindex(columns=list(axes_order["axis"]))
    per_trial = data.drop_duplicates("trial_id").set_index("trial_id")
    norm = mpl.colors.Normalize(per_trial["color"].min(), per_trial["color"].max())
    if norm.vmin == norm.vmax:
        norm = mpl.colors.Normalize(norm.vmin - 1, norm.vmax + 1)
    cmap = mpl.colormaps["viridis"]
    xs = np.arange(len(params))
    with style():
        fig = Figure(layout="constrained", figsize=(max(7.0, 1.45 * len(params) + 2.5), 5.2))
        ax = fig.add_subplot()
        order = per_trial["color"].sort_values().index  # the best drawn last, on top
        for trial in order:
            ys = positions.loc[trial].to_numpy(dtype=float)
            # Another method's parameters (NaN here) are skipped, not drawn as a value:
            # the line passes their axes with no marker and joins the axes it has.
            has = ~np.isnan(ys)
            dashed = per_trial.loc[trial, "status"] != "completed"
            ax.plot(
                xs[has],
                ys[has],
                color=cmap(norm(per_trial.loc[trial, "color"])),
                linewidth=1.8,
                linestyle="--" if dashed else "-",
                marker="o",
                markersize=4,
                alpha=0.9,
                gid=f"trial-{trial}",
            )
        for x, (_, rows) in zip(xs, data.groupby("axis", sort=True), strict=True):
            ax.axvline(x, color="0.3", linewidth=0.8, zorder=0)
            ticks = rows.drop_duplicates("position").sort_values("position")
            if rows["scale"].iloc[0] != "category":
                ticks = ticks.iloc[[0, -1]] if len(ticks) > 1 else ticks
            for _, tick in ticks.iterrows():
                ax.text(
                    x + 0.04,
                    tick["position"],
                    tick["label"],
                    fontsize=8,
                    va="center",
                    color="0.15",
                    bbox={"facecolor": "white", "alpha": 0.7, "pad": 0.5, "edgecolor": "none"},
                )
        ax.set_xticks(
            xs,
            [
                p + (" (log)" if s == "log" else "")
                for p, s in zip(
                    params, data.drop_duplicates("axis").sort_values("axis")["scale"], strict=True
                )
            ],
            rotation=25,
            ha="right",
        )
        ax.set_yticks([0, 0.5, 1], ["min", "", "max"])
        ax.set_ylabel("value, scaled per axis")
        ax.set_xlim(-0.3, len(params) - 0.4)
        ax.set_ylim(-0.06, 1.06)
        ax.grid(False, axis="x")
        bar = fig.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, pad=0.02)
        bar.set_label(column_label(color))
        fig.legend(
            [Line2D([], [], color="0.3"), Line2D([], [], color="0.3", linestyle="--")],
            ["completed", "stopped early"],
            loc="outside lower center",
            ncols=2,
            frameon=False,
        )
        ax.set_title(
            "Sampled hyperparameters, coloured by " + column_label(color), fontweight="bold"
        )
    return fig


def draw_anytime(data: pd.DataFrame, target: float | None = None) -> Figure:
    """Per search strategy, the best final Δm found against the trial-epochs spent: the
    median over its searches with the interquartile band (columns ``strategy``,
    ``trial_epochs``, ``median``, ``q25``, ``q75``; non-finite values are not drawn), and
    ``target`` as a horizontal line."""
    strategies = list(dict.fromkeys(data["strategy"]))
    colors = method_colors(strategies)
    _, dashes = method_lines(strategies)
    finite = data.replace([np.inf, -np.inf], np.nan)
    with style():
        fig = Figure(layout="constrained", figsize=(7.5, 4.6))
        ax = fig.add_subplot()
        for name in strategies:
            rows = finite[finite["strategy"] == name]
            ax.fill_between(
                rows["trial_epochs"], rows["q25"], rows["q75"], color=colors[name], alpha=0.15
            )
            (line,) = ax.plot(rows["trial_epochs"], rows["median"], color=colors[name], label=name)
            if dashes[name]:
                line.set_dashes(dashes[name])
        if target is not None:
            ax.axhline(target, color="0.3", linewidth=1, linestyle=":", label="target")
        ax.set_xlabel("trial-epochs spent")
        ax.set_ylabel("best final Δm found (%)")
        ax.legend(title="strategy", loc="lower right")
        # Two lines: on one, the title is wider than the figure and its ends are cut off.
        fig.suptitle(
            "Anytime performance\n(median and interquartile range over searches)",
            fontweight="bold",
        )
    return fig
