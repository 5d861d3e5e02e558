"""The critical-difference diagram (Demšar 2006) of :func:`study.analysis._cd.cd_data`: a
rank axis (1 = best, on the left), each method hung from its mean rank (the better half
labelled on the left, the rest on the right), the critical difference as a bar above the
axis and a thick line joining each group of methods that are not significantly apart."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from study.analysis._plots import method_colors, style

__all__ = ["draw_cd"]


def draw_cd(data: pd.DataFrame) -> Figure:
    k = int(data.attrs["methods"])
    cd, groups = float(data.attrs["cd"]), data.attrs["cliques"]
    names, ranks = list(data["method"]), list(data["mean_rank"])
    colors = method_colors(names)
    half = (len(names) + 1) // 2
    lowest = -(0.45 + 0.32 * (half - 1)) - 0.32 * len(groups)
    with style():
        fig = Figure(layout="constrained", figsize=(8.0, 1.5 + 0.4 * (half + len(groups))))
        ax = fig.add_subplot()
        ax.set_xlim(-1.8, k + 2.8)  # room for the names
        ax.set_ylim(lowest - 0.25, 1.3)
        ax.axis("off")
        ax.hlines(0, 1, k, color="0.15", linewidth=1.2)
        for tick in range(1, k + 1):
            ax.vlines(tick, 0, 0.12, color="0.15", linewidth=1)
            ax.text(tick, 0.18, str(tick), ha="center", va="bottom", fontsize=10)
        ax.text((1 + k) / 2, 0.55, "mean rank (1 = best)", ha="center", fontsize=9, color="0.3")
        # The critical difference, from rank 1.
        ax.hlines(0.85, 1, 1 + cd, color="0.15", linewidth=1.5)
        ax.vlines([1, 1 + cd], 0.78, 0.92, color="0.15", linewidth=1.5)
        ax.text(1 + cd / 2, 0.95, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize=9)
        for i, (name, rank) in enumerate(zip(names, ranks, strict=True)):
            left = i < half
            level = -(0.45 + 0.32 * (i if left else len(names) - 1 - i)) - 0.32 * len(groups)
            end = 0.5 if left else k + 0.5
            ax.plot([rank, rank, end], [0, level, level], color=colors[name], linewidth=1.2)
            ax.text(
                end - 0.05 if left else end + 0.05,
                level,
                f"{name} ({rank:.2f})",
                ha="right" if left else "left",
                va="center",
                fontsize=10,
            )
        for j, group in enumerate(groups):
            xs = [ranks[names.index(m)] for m in group]
            y = -0.2 - 0.3 * j
            ax.hlines(y, min(xs) - 0.03, max(xs) + 0.03, color="0.1", linewidth=4)
        p = data.attrs["p_value"]
        ax.set_title(
            f"Critical difference: Friedman χ² = {data.attrs['friedman']:.2f}, p = {p:.2g}; "
            f"Nemenyi α = {data.attrs['alpha']:g}, N = {data.attrs['blocks']} blocks",
            fontsize=11,
            fontweight="bold",
        )
    return fig
