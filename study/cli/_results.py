"""Reading results: query, plot, report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from study.errors import UserError, first_line

if TYPE_CHECKING:
    import pandas as pd

_RESULTS_HELP = "results root(s) or study folder(s): paths, or URIs (s3://bucket/results)"


def _readable(locations: list[str]) -> list[Path]:
    from study.store import readable

    return [readable(location) for location in locations]


def _json_lists(frame: pd.DataFrame) -> pd.DataFrame:
    """List cells (a trial's ``tasks``) as JSON arrays, which a CSV reader can parse back,
    not numpy's printed form (also the slower one to write)."""
    lists = [c for c in frame.columns if frame[c].dtype == object and _holds_lists(frame[c])]
    if not lists:
        return frame
    import json

    def cell(value: object) -> object:
        if not _is_list(value):
            return value  # a missing list stays an empty cell
        items = value.tolist() if hasattr(value, "tolist") else list(value)  # type: ignore[attr-defined]
        return json.dumps(items)

    return frame.assign(**{c: frame[c].map(cell) for c in lists})


def _is_list(value: object) -> bool:
    return hasattr(value, "__len__") and not isinstance(value, str | bytes | dict)


def _holds_lists(column: pd.Series) -> bool:
    present = column.dropna()
    return not present.empty and _is_list(present.iloc[0])


def _cmd_query(args: argparse.Namespace) -> int:
    from study.store import load

    if args.format == "parquet" and args.out is None:
        raise UserError("query: --format parquet writes a file; give it with --out FILE")
    if args.out is not None and not args.out.parent.is_dir():
        raise UserError(f"--out: folder {args.out.parent} does not exist")
    kind = "history" if args.history else "trials"
    try:
        frame = load(_readable(args.results), kind, where=args.where, columns=args.columns)
    except (ValueError, KeyError, SyntaxError) as err:
        raise UserError(f"query: {first_line(err)}") from None
    if args.sort:
        missing = [c for c in args.sort if c not in frame]
        if missing:
            raise UserError(f"--sort: no column(s) {missing}; see --columns")
        frame = frame.sort_values(args.sort, ascending=not args.descending)
    if args.limit is not None:
        frame = frame.head(args.limit)
    text: str | None = None  # parquet is binary and goes to --out only
    if args.format == "csv":
        text = _json_lists(frame).to_csv(index=False)
    elif args.format == "json":
        text = frame.to_json(orient="records", indent=1, default_handler=str) + "\n"
    elif args.format == "table":
        text = frame.to_string(index=False, max_colwidth=40) if not frame.empty else "no rows"
        text += "\n"
    if args.out is None:
        sys.stdout.write(text or "")
        return 0
    from study.store import write_atomically

    try:
        if text is None:
            write_atomically(args.out, lambda tmp: frame.to_parquet(tmp, index=False))
        else:
            write_atomically(args.out, lambda tmp: tmp.write_text(text))
    except (OSError, ValueError, TypeError) as err:
        raise UserError(f"--out {args.out}: {first_line(err)}") from None
    print(f"wrote {len(frame)} rows to {args.out}", file=sys.stderr)
    return 0


#: `mtlstudy plot --kind` choices: study.analysis.KINDS (not imported here: it loads torch).
_PLOT_KINDS = ("pareto", "heatmap", "ranks", "cd", "curves", "weights", "parallel", "importance")


def _cmd_plot(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    from study.analysis import (
        RUNS,
        PlotDataError,
        load_results,
        make_plot,
        multi_task_trials,
        save_figure,
    )

    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out: {args.out} is a file; expected a folder for the plots")
    try:
        results = load_results(_readable(args.results))
    except (ValueError, KeyError) as err:
        raise UserError(f"plot: {first_line(err)}") from None
    if multi_task_trials(results.trials, (*RUNS, "running", "error")).empty:
        where = ", ".join(str(p) for p in args.results)
        raise UserError(f"plot: no multi-task trials in {where}")
    kinds = _PLOT_KINDS if args.kind == "all" else (args.kind,)
    written = 0
    for kind in kinds:
        try:
            plot = make_plot(kind, results, x=args.x, y=args.y)
        except PlotDataError as err:
            if args.kind != "all":
                raise UserError(first_line(err)) from None
            print(f"skipped {kind}: {first_line(err)}", file=sys.stderr)
            continue
        except ValueError as err:
            raise UserError(f"plot {kind}: {first_line(err)}") from None
        try:
            paths = save_figure(plot.figure, args.out, kind)
        except OSError as err:
            raise UserError(f"--out {args.out}: {first_line(err)}") from None
        if plot.note:
            print(f"note: {plot.note}", file=sys.stderr)
        print("wrote " + " ".join(str(p) for p in paths))
        written += 1
    if not written:
        raise UserError("plot: nothing to draw; see the lines above")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from study.analysis import PlotDataError, write_report
    from study.store import result_files

    results = _readable(args.results)
    try:  # the study first: a missing one is not the output's fault
        result_files(results)
    except (FileNotFoundError, ValueError) as err:
        raise UserError(f"report: results {first_line(err)}") from None
    if args.out.is_dir():
        raise UserError(f"--out: {args.out} is a folder; expected an HTML file name")
    if not args.out.parent.is_dir():
        raise UserError(f"--out: folder {args.out.parent} does not exist")
    try:
        path = write_report(results, args.out)
    except PlotDataError as err:
        raise UserError(first_line(err)) from None
    except (ValueError, KeyError) as err:
        raise UserError(f"report: {first_line(err)}") from None
    except OSError as err:
        raise UserError(f"--out {args.out}: {first_line(err)}") from None
    print(f"wrote {path}")
    return 0


def add_commands(commands: Any) -> None:
    query = commands.add_parser("query", help="read trials (or history) from Parquet results")
    query.add_argument("results", nargs="+", help=_RESULTS_HELP)
    query.add_argument(
        "--where",
        help="a filter, e.g. \"method == 'dwa' and `final.semseg.miou` > 0.5\" "
        "(dotted names in backticks; see docs/RESULTS.md)",
    )
    query.add_argument("--columns", nargs="+", help="columns to read")
    query.add_argument("--sort", nargs="+", help="columns to sort by")
    query.add_argument("--descending", action="store_true")
    query.add_argument("--limit", type=int)
    query.add_argument("--history", action="store_true", help="read the tidy history rows")
    query.add_argument("--format", choices=("table", "csv", "json", "parquet"), default="table")
    query.add_argument(
        "--out",
        type=Path,
        help="write to this file (atomically) instead of stdout; required for parquet",
    )
    query.set_defaults(func=_cmd_query)

    plot = commands.add_parser("plot", help="plot results (PNG and SVG) from Parquet results")
    plot.add_argument("results", nargs="+", help=_RESULTS_HELP)
    plot.add_argument(
        "--kind",
        required=True,
        choices=(*_PLOT_KINDS, "all"),
        help="which plot, or all (see docs/ANALYSIS.md)",
    )
    plot.add_argument("--out", type=Path, required=True, help="folder for <kind>.png and .svg")
    plot.add_argument(
        "--x", choices=("gflops", "params"), default="gflops", help="pareto: the cost axis"
    )
    plot.add_argument(
        "--y",
        default="delta_m",
        help="pareto: the accuracy axis, delta_m (default), best_delta_m or a task metric "
        "such as final.semseg.miou",
    )
    plot.set_defaults(func=_cmd_plot)
    report = commands.add_parser("report", help="write an HTML report that opens offline")
    report.add_argument("results", nargs="+", help=_RESULTS_HELP)
    report.add_argument(
        "--out",
        type=Path,
        required=True,
        help="the HTML file to write (with plotly installed, plotly.min.js is written beside it)",
    )
    report.set_defaults(func=_cmd_report)
