"""Seaborn figures of the tidy data in :mod:`study.analysis._data`, saved as PNG and SVG.

Figures are :class:`matplotlib.figure.Figure` objects made without pyplot, so drawing
needs no display and touches no global state; styles apply inside each call only.
Colours come from seaborn's colour-blind-safe ``colorblind`` palette (one colour per
method, the same in every plot), ``vlag_r`` (diverging at Δm = 0) and ``viridis``.
"""

from __future__ import annotations

import contextlib
import textwrap
import warnings
from collections.abc import Iterator, Sequence

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from study.analysis._labels import column_label, param_label

__all__ = [
    "draw_heatmap",
    "draw_importance",
    "draw_message",
    "draw_pareto",
    "draw_ranks",
    "method_colors",
    "method_lines",
    "style",
]

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
# Dash patterns (on, off, ...) in line widths; "" is solid. With the markers they tell
# methods apart where colours do not (print in grey, colour-vision deficiencies).
_DASHES: tuple[str | tuple[float, ...], ...] = (
    "",
    (4, 1.5),
    (1, 1),
    (3, 1.25, 1.5, 1.25),
    (5, 1, 1, 1, 1, 1),
    (2, 2),
    (6, 2),
    (3, 1, 1, 1, 1, 1, 1, 1),
)
_POINT_ALPHA = 0.7
_RC = {"svg.hashsalt": "mtlstudy", "svg.fonttype": "none", "figure.dpi": 100}


@contextlib.contextmanager
def style() -> Iterator[None]:
    """Seaborn's white-grid style and notebook sizes, for this block only."""
    rc = {**sns.axes_style("whitegrid"), **sns.plotting_context("notebook"), **_RC}
    with mpl.rc_context(rc):
        yield


def method_colors(methods: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    """One colour-blind-safe colour per method, by sorted name, the same in every plot."""
    names = sorted(set(methods))
    palette = sns.color_palette("colorblind", max(len(names), 1))
    return {name: palette[i % len(palette)] for i, name in enumerate(names)}


def method_lines(
    methods: Sequence[str],
) -> tuple[dict[str, str], dict[str, str | tuple[float, ...]]]:
    """One marker and one dash pattern per method, by sorted name as
    :func:`method_colors` assigns colours: seaborn's ``markers`` and ``dashes``."""
    names = sorted(set(methods))
    markers = {name: _MARKERS[i % len(_MARKERS)] for i, name in enumerate(names)}
    dashes = {name: _DASHES[i % len(_DASHES)] for i, name in enumerate(names)}
    return markers, dashes


def _wrap(text: str, width: int = 60) -> str:
    return "\n".join(textwrap.wrap(text, width)) or text


def draw_message(title: str, message: str) -> Figure:
    """A figure that says why there is nothing to draw (e.g. not enough trials)."""
    with style():
        fig = Figure(layout="constrained", figsize=(7, 3))
        ax = fig.add_subplot()
        ax.set_axis_off()
        ax.set_title(title, fontweight="bold")
        ax.text(
            0.5,
            0.5,
            _wrap(message, 70),
            ha="center",
            va="center",
            fontsize=12,
            transform=ax.transAxes,
            gid="message",
        )
    return fig


def _legend_right(ax: Axes, handles: list, labels: list[str]) -> None:
    ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False)


def draw_pareto(data: pd.DataFrame) -> Figure:
    """Each configuration a point at its mean over seeds, with ±1 standard deviation of
    ``y`` as a bar when it has several (colour: method, marker: architecture); the front
    as a staircase."""
    x, y = data.attrs.get("x", "gflops"), data.attrs.get("y", "delta_m")
    higher = data.attrs.get("higher_is_better", True)
    colors = method_colors(data["method"])
    archs = sorted(data["architecture"].unique())
    markers = {a: _MARKERS[i % len(_MARKERS)] for i, a in enumerate(archs)}
    with style():
        fig = Figure(layout="constrained", figsize=(8, 5))
        ax = fig.add_subplot()
        sns.scatterplot(
            data=data,
            x="x",
            y="y",
            hue="method",
            style="architecture",
            palette=colors,
            markers=markers,
            hue_order=list(colors),
            style_order=archs,
            s=80,
            # Translucent fill under a dark outline: coincident points (the same
            # configuration's cost, close Δm) stay visible, and the legend shows the same.
            alpha=_POINT_ALPHA,
            edgecolor="0.15",
            linewidth=0.8,
            ax=ax,
            zorder=3,
            legend="full",
        )
        ax.collections[-1].set_gid("points")
        spread = data[data["y_std"].notna()] if "y_std" in data else data.iloc[:0]
        if not spread.empty:
            ax.errorbar(
                spread["x"],
                spread["y"],
                yerr=spread["y_std"],
                fmt="none",
                ecolor="0.4",
                elinewidth=1,
                capsize=3,
                zorder=2,
                gid="spread",
            )
        front = data[data["on_front"]].sort_values(["x", "y"], ascending=[True, not higher])
        # The staircase goes on to the costliest trial: everything below it is dominated.
        steps_x = [*front["x"], data["x"].max()]
        steps_y = [*front["y"], front["y"].iloc[-1]]
        ax.step(
            steps_x,
            steps_y,
            where="post",
            color="0.15",
            linestyle="--",
            linewidth=1.3,
            zorder=2,
            label="Pareto front",
            gid="front",
        )
        ax.scatter(
            front["x"],
            front["y"],
            s=220,
            facecolors="none",
            edgecolors="0.15",
            linewidths=1.2,
            zorder=4,
            gid="front_points",
        )
        positive = data["x"] > 0
        if positive.all() and data["x"].max() / data["x"].min() >= 20:
            ax.set_xscale("log")
        if y in ("delta_m", "best_delta_m"):
            ax.axhline(0, color="0.5", linewidth=0.8, zorder=1)
        ax.set_xlabel(column_label(x))
        ax.set_ylabel(column_label(y))
        ax.set_title(
            f"{column_label(y).rstrip(' ↑↓')} against "
            f"{column_label(x).rstrip(' ↑↓')}: the Pareto front",
            fontweight="bold",
        )
        handles, labels = ax.get_legend_handles_labels()
        if len(archs) == 1:
            # One architecture: a legend entry tells nothing the title does not.
            cut = labels.index("architecture")
            handles, labels = handles[:cut] + handles[cut + 2 :], labels[:cut] + labels[cut + 2 :]
            ax.set_title(f"{ax.get_title()}\n(architecture: {archs[0]})", fontweight="bold")
        _legend_right(ax, handles, labels)
    return fig


def _cell_text(row: pd.Series) -> str:
    spread = "1 seed" if row["seeds"] < 2 else f"± {row['std']:.2f} ({row['seeds']} seeds)"
    return f"{row['mean']:+.2f}\n{spread}"


def _heatmap(ax: Axes, means: pd.DataFrame, text: pd.DataFrame, limit: float, value: str) -> None:
    sns.heatmap(
        means,
        annot=text,
        fmt="",
        cmap="vlag_r",
        center=0,
        vmin=-limit,
        vmax=limit,
        linewidths=0.5,
        linecolor="white",
        ax=ax,
        cbar_kws={"label": f"mean {column_label(value)}"},
        annot_kws={"fontsize": 10},
    )


def draw_heatmap(cells: pd.DataFrame) -> Figure:
    """Method × architecture mean Δm, one panel per dataset, the spread over seeds written."""
    value = cells.attrs.get("value", "delta_m")
    datasets = sorted(cells["data_key"].unique())
    methods = sorted(cells["method"].unique())
    archs = sorted(cells["architecture"].unique())
    limit = float(np.nanmax(np.abs(cells["mean"]))) or 1.0
    width = max(7.0, (2.3 + 1.9 * len(archs)) * len(datasets) + 1.5)
    with style():
        fig = Figure(layout="constrained", figsize=(width, 1.9 + 0.75 * len(methods)))
        axes = fig.subplots(1, len(datasets), squeeze=False)[0]
        for ax, dataset in zip(axes, datasets, strict=True):
            rows = cells[cells["data_key"] == dataset]
            means = rows.pivot(index="method", columns="architecture", values="mean")
            means = means.reindex(index=methods, columns=archs)
            text = (
                rows.assign(text=rows.apply(_cell_text, axis=1))
                .pivot(index="method", columns="architecture", values="text")
                .reindex(index=methods, columns=archs)
                .fillna("")
            )
            with warnings.catch_warnings():
                # seaborn 0.13 calls Colormap.set_bad, which matplotlib 3.11 deprecates.
                warnings.simplefilter("ignore", PendingDeprecationWarning)
                _heatmap(ax, means, text, limit, value)
            ax.collections[0].set_gid("cells")
            ax.set_xlabel("architecture")
            ax.set_ylabel("balancing method")
            ax.tick_params(axis="y", rotation=0)
            ax.set_title(_wrap(f"data: {dataset}", 50), fontsize=10)
        fig.suptitle(
            f"Mean {column_label(value)} per method and architecture\n"
            "(each seed's best trial; ± std over seeds)",
            fontweight="bold",
        )
    return fig


def _bar_values(ax: Axes, values: Sequence[float], texts: Sequence[str]) -> None:
    for i, (value, text) in enumerate(zip(values, texts, strict=True)):
        ax.text(value, i, f"  {text}", va="center", fontsize=9)


def draw_importance(data: pd.DataFrame, reliable_trials: int) -> Figure:
    """PED-ANOVA importance per hyperparameter, one panel per Optuna study. A study with
    fewer than ``reliable_trials`` completed trials gets a caution and its bars no numbers:
    their order is a hint, their sizes are not yet a measurement."""
    groups = list(data.groupby(["study", "optuna_study"], sort=True))
    height = sum(1.5 + 0.42 * len(g) for _, g in groups)
    with style():
        fig = Figure(layout="constrained", figsize=(8, max(3.0, height)))
        axes = fig.subplots(len(groups), 1, squeeze=False).ravel()
        for ax, ((study, name), rows) in zip(axes, groups, strict=True):
            rows = rows.sort_values("importance", ascending=False)
            shown = rows.assign(param=rows["param"].map(param_label))
            trials = int(rows["trials"].iloc[0])
            sns.barplot(
                data=shown,
                x="importance",
                y="param",
                color=sns.color_palette("colorblind")[0],
                orient="h",
                ax=ax,
            )
            ax.set_xlim(0, max(1e-9, shown["importance"].max()) * 1.2)
            ax.set_ylabel("hyperparameter")
            title = f"{study} · Optuna study '{name}' · {trials} completed trials"
            ax.set_title(title, fontsize=10)
            if trials >= reliable_trials:
                values = list(shown["importance"])
                _bar_values(ax, values, [f"{v:.3f}" for v in values])
                ax.set_xlabel("importance (PED-ANOVA, sums to 1)")
                continue
            ax.xaxis.set_major_formatter(mpl.ticker.NullFormatter())
            ax.set_xlabel(
                f"importance (PED-ANOVA), relative: no values below {reliable_trials} trials"
            )
            ax.text(
                0.98,
                0.04,
                f"Caution: only {trials} completed trials (fewer than {reliable_trials}); "
                "the order is a hint, not a measurement.",
                transform=ax.transAxes,
                ha="right",
                va="bottom",
                fontsize=9,
                color="#8b0000",
                wrap=True,
                bbox={"facecolor": "#fff4e5", "edgecolor": "#8b0000", "pad": 3},
                gid="caution",
            )
        fig.suptitle("Hyperparameter importance", fontweight="bold")
    return fig


def draw_ranks(summary: pd.DataFrame) -> Figure:
    """Mean rank of each method (lower is better), its sd, over tasks and datasets."""
    colors = method_colors(summary["method"])
    order = list(summary["method"])
    with style():
        fig = Figure(layout="constrained", figsize=(7.5, 1.4 + 0.5 * len(order)))
        ax = fig.add_subplot()
        sns.barplot(
            data=summary,
            x="mean_rank",
            y="method",
            hue="method",
            order=order,
            hue_order=order,
            palette=colors,
            orient="h",
            legend=False,
            ax=ax,
        )
        std = summary["std"].fillna(0).to_numpy()
        ax.errorbar(
            summary["mean_rank"],
            np.arange(len(order)),
            xerr=std,
            fmt="none",
            ecolor="0.2",
            capsize=4,
            linewidth=1,
        )
        _bar_values(
            ax,
            list(summary["mean_rank"] + std),
            [
                f"{r:.2f} (n={n})"
                for r, n in zip(summary["mean_rank"], summary["settings"], strict=True)
            ],
        )
        ax.set_xlim(0, (summary["mean_rank"] + std).max() * 1.3)
        ax.set_xlabel("mean rank over tasks and datasets (1 = best) ↓")
        ax.set_ylabel("balancing method")
        ax.set_title("Mean rank on each task's headline metric (± sd)", fontweight="bold")
    return fig
