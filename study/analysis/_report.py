"""One HTML report of a study that opens offline: spec, leaderboard, best configuration,
failed trials and every plot, with images embedded as PNG data URIs and CSS inline (and
plotly.min.js beside it for the interactive figures)."""

from __future__ import annotations

import base64
import datetime
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from study.analysis._data import PlotDataError, multi_task_trials
from study.analysis._figures import KINDS, Plot, make_plot, png_bytes
from study.analysis._importance import RELIABLE_TRIALS
from study.analysis._interactive import PLOTLY_JS, parallel_coordinate_html, write_plotlyjs
from study.analysis._labels import param_label, sorted_params
from study.analysis._pareto import configurations
from study.analysis._results import StudyResults, load_results
from study.analysis._tables import esc, fmt, html_table, leaderboard_html, unique
from study.analysis._uncertainty import compare_best_two
from study.store import write_atomically

__all__ = ["CAPTIONS", "render_report", "write_report"]

#: What each plot shows and how its data is computed (docs/ANALYSIS.md says more).
CAPTIONS: dict[str, tuple[str, str]] = {
    "pareto": (
        "Accuracy against cost",
        "Each configuration of completed multi-task trials: Δm (%) against inference GFLOPs "
        "per image, at the mean over its seeds, with a bar of ±1 standard deviation when it "
        "has several. Colour is the balancing method, marker the architecture; the dashed "
        "staircase joins the non-dominated configurations (fewer GFLOPs, higher Δm), which "
        "are ringed.",
    ),
    "heatmap": (
        "Method × architecture",
        "Per seed, the best completed trial of each method and architecture (the result of "
        "that seed's search); the cell is the mean Δm (%) over seeds, with its standard "
        "deviation and the number of seeds.",
    ),
    "ranks": (
        "Mean rank",
        "Methods ranked (1 = best) on each task's headline metric, per dataset, architecture "
        "and task, using each method's mean over seeds of its best completed trial; the bar "
        "is the mean rank over those settings, the whisker its standard deviation.",
    ),
    "cd": (
        "Critical difference",
        "Methods ranked (1 = best) within each block: a dataset, architecture, task (its "
        "headline metric) and seed, on each method's best completed trial of that seed; "
        "blocks missing a method are left out. The Friedman test (scipy.stats."
        "friedmanchisquare) asks whether the methods rank alike; the Nemenyi critical "
        "difference CD = q_α √(k(k+1)/6N), with q_α from the studentized range, is the bar "
        "above the axis. Methods joined by a thick line are not significantly apart.",
    ),
    "curves": (
        "Validation curves",
        "Each task's headline validation metric per epoch, mean ± sd over each method's "
        "completed and stopped-early trials (those stopped early end early).",
    ),
    "weights": (
        "Task weights",
        "The balancer's weight of each task per epoch (history rows train/<task>/weight), "
        "mean ± sd over each method's trials.",
    ),
    "parallel": (
        "Sampled hyperparameters",
        "Each completed (solid) or stopped-early (dashed) trial as a line through its "
        "sampled hyperparameters, each axis scaled to [0, 1] (log scale where marked), "
        "coloured by Δm (%). A method's own parameters appear only on its trials' lines, "
        "which pass other methods' axes without a marker.",
    ),
    "importance": (
        "Hyperparameter importance",
        "PED-ANOVA importance (Optuna's default evaluator) of each sampled hyperparameter "
        "for the study's objective, from the Optuna journal, normalised to sum to 1. "
        f"A study with fewer than {RELIABLE_TRIALS} completed trials shows the order only, "
        "with no values: its importances are too noisy to read as numbers.",
    ),
}

_CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; margin: 2rem auto;
       max-width: 1500px; padding: 0 1rem; color: #1d1d1f; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { margin-top: 2.2rem;
     border-bottom: 1px solid #ccc; padding-bottom: .2rem; }
.meta, .note, figcaption { color: #555; font-size: .9rem; }
table { border-collapse: collapse; font-size: .85rem; margin: .6rem 0; }
th, td { padding: .25rem .55rem; border-bottom: 1px solid #e2e2e2; text-align: right;
         white-space: nowrap; }
th { background: #f4f4f6; } td.text, th.text { text-align: left; }
th.task { text-align: center; border-bottom: 1px solid #bbb; }
tr.reference td { white-space: normal; max-width: 12rem; }
table.leaderboard { font-size: .8rem; } table.leaderboard th { white-space: normal; }
table.leaderboard th, table.leaderboard td { padding: .25rem .4rem; }
table.leaderboard colgroup { border-left: 2px solid #d0d0d6; }
td.error { text-align: left; white-space: normal; font-family: ui-monospace, monospace; }
tr.reference td { background: #fafaf0; font-style: italic; }
tbody tr:hover td { background: #f0f4fa; }
.scroll { overflow-x: auto; max-width: 100%; }
/* A wide leaderboard scrolls inside its box, its method column pinned at the left. */
table.leaderboard .pinned { position: sticky; left: 0; z-index: 1; background: #fff;
                            box-shadow: inset -1px 0 #d0d0d6; }
table.leaderboard th.pinned { background: #f4f4f6; z-index: 2; }
table.leaderboard tr.reference td.pinned { background: #fafaf0; }
table.leaderboard tbody tr:hover td.pinned { background: #f0f4fa; }
details.interactive { overflow-x: auto; }
details { margin: .6rem 0; } summary { cursor: pointer; color: #333; }
b.best { color: #00468b; }
figure { margin: 1.2rem 0; } figure img { max-width: 100%; height: auto;
         border: 1px solid #eee; }
pre { background: #f6f6f6; padding: .8rem; overflow-x: auto; font-size: .85rem; }
"""


def _spec_section(results: StudyResults) -> str:
    trials = results.trials
    multi = multi_task_trials(trials, ("completed", "stopped_early", "running", "error"))
    counts = (
        trials.groupby(["kind", "status"]).size().to_dict()
        if {"kind", "status"} <= set(trials)
        else {}
    )
    hp = sorted_params(c for c in trials if c.startswith("hp.") and trials[c].notna().any())
    versions = {
        c.removeprefix("versions."): ", ".join(unique(trials, c))
        for c in trials
        if c.startswith("versions.")
    }
    items = [
        ("study", ", ".join(unique(trials, "study"))),
        ("dataset", ", ".join(unique(trials, "dataset"))),
        ("dataset key", ", ".join(unique(trials, "dataset_key"))),
        ("tasks", ", ".join(unique(multi, "tasks"))),
        ("architectures", ", ".join(unique(multi, "architecture"))),
        ("methods", ", ".join(sorted(unique(multi, "method")))),
        ("seeds", ", ".join(unique(trials, "seed"))),
        ("multi-task trials", str(len(multi))),
        ("epochs (most reported)", fmt(multi["epochs"].max() if "epochs" in multi else None)),
        ("trials by kind and status", "; ".join(f"{k} {s}: {n}" for (k, s), n in counts.items())),
        ("searched hyperparameters", ", ".join(param_label(c) for c in hp)),
        ("versions", "; ".join(f"{k} {v}" for k, v in versions.items())),
        ("nodes", ", ".join(unique(trials, "node"))),
    ]
    rows = [[esc(k), esc(v or "–")] for k, v in items]
    out = ["<h2>Study</h2>"]
    specs = [d / "spec.yaml" for d in results.study_dirs if (d / "spec.yaml").is_file()]
    out.append(
        '<p class="note">What the store records about the study; the spec itself is not '
        "stored, so this is reconstructed from the trials.</p>"
        if not specs
        else '<p class="note">What the trials record; the stored spec is '
        '<a href="#spec">at the end</a>.</p>'
    )
    out.append(html_table(rows, ["field", "value"], ("text", "text")))
    return "\n".join(out)


def _spec_dump_section(results: StudyResults) -> str:
    """Each stored spec, folded: the whole YAML is long and read last, if at all."""
    specs = [d / "spec.yaml" for d in results.study_dirs if (d / "spec.yaml").is_file()]
    if not specs:
        return ""
    out = ['<h2 id="spec">Spec</h2>']
    out += [
        f"<details><summary>{esc(path)}</summary><pre>{esc(path.read_text())}</pre></details>"
        for path in specs
    ]
    return "\n".join(out)


def _leaderboard_section(trials: pd.DataFrame, limit: int) -> str:
    stopped = len(multi_task_trials(trials, ("stopped_early",)))
    note = (
        '<p class="note">Completed multi-task trials, best Δm first, with their final '
        "validation metrics (↑ higher is better, ↓ lower is better; fractions in [0, 1]). "
        "The first row is the single-task baselines B that Δm is measured against: "
        "Δm (%) = 100/T · Σ_t ±(M_t − B_t)/B_t over the T tasks (a task's metrics averaged; "
        "+ where higher is better), so Δm &gt; 0 beats the baselines. The best "
        f"value of each column is bold. {stopped} trial(s) stopped early are not ranked.</p>"
    )
    return "<h2>Leaderboard</h2>\n" + note + leaderboard_html(trials, limit)


def _best_section(trials: pd.DataFrame) -> str:
    out = ["<h2>Best trial</h2>"]
    done = multi_task_trials(trials)
    if done.empty or "delta_m" not in done or done["delta_m"].notna().sum() == 0:
        return out[0] + '<p class="note">No completed multi-task trial with Δm.</p>'
    row = done.loc[done["delta_m"].idxmax()]
    items = [
        ("trial", row["trial_id"]),
        ("study", row["study"]),
        ("architecture", row["architecture"]),
        ("method", row["method"]),
        ("Δm (%)", f"{row['delta_m']:+.2f}"),
        ("inference GFLOPs per image", fmt(row.get("gflops"))),
        ("parameters", fmt(row.get("params"))),
        ("epochs", fmt(row.get("epochs"))),
        ("seed", fmt(row.get("seed"))),
    ]
    hp = [c for c in done if c.startswith("hp.") and c != "hp.method" and pd.notna(row[c])]
    items += [(param_label(c), fmt(row[c])) for c in sorted_params(hp)]
    out.append(
        '<p class="note">The completed multi-task trial with the highest Δm, and its sampled '
        "configuration (hp.* columns).</p>"
    )
    rows = [[esc(k), esc(v)] for k, v in items]
    out.append(html_table(rows, ["field", "value"], ("text", "text")))
    return "\n".join(out)


def _failed_section(trials: pd.DataFrame) -> str:
    out = ["<h2>Failed trials</h2>"]
    if "status" not in trials:
        return out[0] + '<p class="note">None.</p>'
    failed = trials[trials["status"] == "error"]
    if failed.empty:
        return out[0] + '<p class="note">None.</p>'
    rows = []
    for _, row in failed.sort_values("trial_id").iterrows():
        error = row.get("error")
        rows.append(
            [esc(row.get(c, "–")) for c in ("trial_id", "kind", "method", "architecture")]
            + [esc(error if isinstance(error, str) else "–")]
        )
    out.append(f'<p class="note">{len(failed)} trial(s) ended with an error.</p>')
    header = ["trial", "kind", "method", "architecture", "error"]
    out.append(html_table(rows, header, ("text",) * 4 + ("error",)))
    return "\n".join(out)


def _caption(kind: str, plot: Plot) -> str:
    """The kind's caption, and what this plot's data adds (e.g. which methods' achievements
    are drawn)."""
    caption = CAPTIONS[kind][1]
    if kind == "weights" and plot.data is not None:
        achieved = plot.data[plot.data["metric"] == "achievement"]
        methods = sorted(achieved["method"].unique())
        if methods:
            caption += (
                f" Below, the achievements of {', '.join(methods)} (history rows "
                "train/<task>/achievement): each task's smoothed validation KPI ÷ its "
                "single-task potential, the dotted line at 1 reaching it; the band is clipped "
                "at 0 and at 1 (or the highest achievement, when one passed 1)."
            )
        else:
            caption += " No method here records achievements (AMTL's KPI ÷ potential)."
    return caption


def _png_width(png: bytes) -> int:
    """A PNG's width in pixels, from its IHDR chunk."""
    return int.from_bytes(png[16:20], "big")


def _plots_section(results: StudyResults) -> str:
    out = ["<h2>Plots</h2>"]
    for kind in KINDS:
        title = CAPTIONS[kind][0]
        try:
            plot = make_plot(kind, results)
        except PlotDataError as err:
            out.append(f'<h3>{esc(title)}</h3><p class="note">Not drawn: {esc(err)}</p>')
            continue
        caption = _caption(kind, plot)
        png = png_bytes(plot.figure)
        width = _png_width(png) * 2 // 3  # 150 dpi shown as 100 dpi: sharp on dense screens
        data = base64.b64encode(png).decode("ascii")
        note = f" {esc(plot.note)}" if plot.note else ""
        out.append(
            f'<figure id="plot-{kind}"><h3>{esc(title)}</h3>'
            f'<img src="data:image/png;base64,{data}" width="{width}" '
            f'alt="{esc(title)}: {esc(caption)}">'
            f"<figcaption>{esc(caption)}{note}</figcaption></figure>"
        )
        if kind == "parallel":
            out.append(_interactive_parallel(results))
    return "\n".join(out)


def _interactive_parallel(results: StudyResults) -> str:
    """Optuna's own interactive parallel coordinates, folded; nothing without plotly."""
    fragment = parallel_coordinate_html(results.study_dirs)
    if not fragment:
        return ""
    return (
        '<details class="interactive" id="plot-parallel-interactive"><summary>Interactive '
        "parallel coordinates (Optuna's plot_parallel_coordinate, from the journal: hover "
        "a line for its trial, zoom on an axis)</summary>" + fragment + "</details>"
    )


def _seeds_section(trials: pd.DataFrame, limit: int) -> str:
    """With repeats: each configuration's Δm over its seeds, and whether the best
    method's lead over the second survives them."""
    if "config_id" not in trials or "delta_m" not in trials:
        return ""
    table = configurations(trials, ["delta_m"])
    if table.empty or table["seeds"].max() < 2:
        return ""
    table = table.sort_values("delta_m_mean", ascending=False, na_position="last").head(limit)
    flagged = trials.dropna(subset=["pareto"]) if "pareto" in trials else trials.iloc[:0]
    front = set(flagged.loc[flagged["pareto"].astype(bool), "config_id"])
    rows = [
        [
            esc(r.config_id),
            esc(r.method),
            esc(r.architecture),
            esc(r.seeds),
            esc(fmt(r.delta_m_mean)),
            esc(fmt(r.delta_m_std)),
            "yes" if r.config_id in front else "",
        ]
        for r in table.itertuples()
    ]
    header = ["configuration", "method", "architecture", "seeds", "Δm mean (%)", "Δm sd", "Pareto"]
    comparison = compare_best_two(trials)
    verdict = (
        "Fewer than two methods have two seeds in common: no comparison."
        if comparison is None
        else comparison.describe() + "."
    )
    return "\n".join(
        [
            "<h2>Over seeds</h2>",
            '<p class="note">Each configuration\'s completed repeats: the mean and standard '
            "deviation of Δm over its seeds.</p>",
            html_table(rows, header, ("text", "text", "text")),
            f'<p id="comparison">{esc(verdict)}</p>',
        ]
    )


def render_report(results: StudyResults, sources: Sequence[str] = (), limit: int = 50) -> str:
    """The report as one HTML document that requests nothing outside its folder; its only
    script is the interactive parallel coordinates' plotly (where installed), loaded from
    ``plotly.min.js`` beside it; the stored spec last, folded."""
    studies = ", ".join(unique(results.trials, "study")) or "study"
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    source = ", ".join(sources) or ", ".join(str(d) for d in results.study_dirs)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="data:,">',
        f"<title>mtlstudy report: {esc(studies)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>mtlstudy report: {esc(studies)}</h1>",
        f'<p class="meta">From {esc(source)}, generated {esc(now)}.</p>',
        _spec_section(results),
        _leaderboard_section(results.trials, limit),
        _seeds_section(results.trials, limit),
        _best_section(results.trials),
        _failed_section(results.trials),
        _plots_section(results),
        _spec_dump_section(results),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def write_report(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], out: Path
) -> Path:
    """Render the report of ``paths`` and write it to ``out`` atomically (a hidden temporary
    name in the same folder, then a rename); with its interactive figures, plotly.js once
    beside it as ``plotly.min.js``."""
    items = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    results = load_results(items)
    if multi_task_trials(results.trials, ("completed", "stopped_early", "running", "error")).empty:
        raise PlotDataError(f"report: no multi-task trials in {', '.join(map(str, items))}")
    text = render_report(results, sources=[str(p) for p in items])
    if f'src="{PLOTLY_JS}"' in text:  # first, so the report never names a missing file
        write_plotlyjs(out.parent)
    return write_atomically(out, lambda tmp: tmp.write_text(text, encoding="utf-8"))
