"""The critical-difference ranking of many methods (Demšar 2006): a Friedman test over
blocks, then the Nemenyi post-hoc test's critical difference of mean ranks.

A block is one (data setting, architecture, task, seed): each method's best completed
trial of that seed on the task's headline metric. Methods are ranked within each block
(1 = best, ties share the mean rank); blocks that miss a method are left out, since the
Friedman test needs every method in every block.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from models.task_metrics import task_metrics
from study.analysis._data import PlotDataError, multi_task_trials
from study.analysis._labels import higher_is_better

__all__ = ["cd_data", "cliques", "nemenyi_cd", "rank_blocks"]


def nemenyi_cd(methods: int, blocks: int, alpha: float = 0.05) -> float:
    """The Nemenyi critical difference of mean ranks: q_α √(k(k+1)/(6N)), where q_α is the
    studentized range's 1−α quantile for k methods and infinite degrees of freedom,
    divided by √2 (Demšar 2006, section 3.2.2)."""
    if methods < 2 or blocks < 1:
        raise ValueError(f"expected at least 2 methods and 1 block, got {methods} and {blocks}")
    q = stats.studentized_range.ppf(1 - alpha, methods, np.inf) / math.sqrt(2)
    return float(q * math.sqrt(methods * (methods + 1) / (6 * blocks)))


def rank_blocks(values: pd.DataFrame, higher: pd.Series) -> pd.DataFrame:
    """Each block's (row's) ranks of the methods (columns), 1 = best; ``higher`` says per
    block whether higher values are better."""
    signs = np.where(higher.to_numpy(dtype=bool), -1.0, 1.0)[:, None]
    ranks = stats.rankdata(values.to_numpy(dtype=float) * signs, axis=1)
    return pd.DataFrame(ranks, index=values.index, columns=values.columns)


def cliques(mean_ranks: pd.Series, cd: float) -> list[list[str]]:
    """The maximal groups of methods (in rank order) whose mean ranks are all within
    ``cd`` of each other: the bars of the diagram. Groups of one are left out."""
    ordered = mean_ranks.sort_values()
    names, ranks = ordered.index.tolist(), ordered.to_numpy()
    groups: list[list[str]] = []
    for i in range(len(names)):
        j = i
        while j + 1 < len(names) and ranks[j + 1] - ranks[i] < cd:
            j += 1
        if j > i and not (groups and names.index(groups[-1][-1]) >= j):
            groups.append(names[i : j + 1])
    return groups


def _blocks(trials: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    rows = multi_task_trials(trials)
    if rows.empty:
        raise PlotDataError("cd: no completed multi-task trial")
    frames, directions = [], {}
    for column in [c for c in rows.columns if c.startswith("final.") and c.count(".") == 2]:
        task, metric = column.split(".")[1:]
        try:
            if task_metrics(task).headline != metric:
                continue
        except KeyError:
            continue
        higher = higher_is_better(column)
        valid = rows.dropna(subset=[column])
        keys = ["data_key", "architecture", valid["seed"].fillna(-1).rename("seed"), "method"]
        best = valid.groupby(keys)[column].agg("max" if higher else "min")
        table = best.unstack("method")
        table.index = pd.MultiIndex.from_tuples(
            [(*k, task) for k in table.index], names=["data_key", "architecture", "seed", "task"]
        )
        frames.append(table)
        directions |= dict.fromkeys(table.index, higher)
    if not frames:
        raise PlotDataError("cd: no completed trial has a task's headline metric")
    values = pd.concat(frames)
    higher = pd.Series([directions[i] for i in values.index], index=values.index)
    return values, higher


def cd_data(trials: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Per method: ``mean_rank`` over the complete blocks (1 = best), best first.
    ``attrs``: ``cd`` (the Nemenyi critical difference at ``alpha``), ``alpha``, ``blocks``
    (N), ``methods`` (k), ``friedman`` and ``p_value`` (the Friedman χ² test that all
    methods rank alike, ``scipy.stats.friedmanchisquare``), ``cliques`` (groups of
    methods not significantly apart) and ``dropped`` (blocks that missed a method)."""
    values, higher = _blocks(trials)
    complete = values.notna().all(axis=1)
    if values.shape[1] < 3:
        raise PlotDataError(
            f"cd: needs at least three methods, found {values.shape[1]}; "
            "two are compared over seeds in the report instead"
        )
    if complete.sum() < 2:
        raise PlotDataError(
            "cd: fewer than two (dataset, architecture, task, seed) blocks hold every method"
        )
    kept = values[complete]
    ranks = rank_blocks(kept, higher[complete])
    # The ranks, not the values: blocks differ in direction (mIoU ↑, RMSE ↓) and scale.
    friedman = stats.friedmanchisquare(*(ranks[m].to_numpy() for m in ranks.columns))
    k, n = kept.shape[1], kept.shape[0]
    cd = nemenyi_cd(k, n, alpha)
    mean_ranks = ranks.mean().sort_values()
    data = pd.DataFrame({"method": mean_ranks.index, "mean_rank": mean_ranks.to_numpy()})
    data.attrs = {
        "cd": cd,
        "alpha": alpha,
        "blocks": n,
        "methods": k,
        "friedman": float(friedman.statistic),
        "p_value": float(friedman.pvalue),
        "cliques": cliques(mean_ranks, cd),
        "dropped": int((~complete).sum()),
    }
    return data
