"""Paper tables: ``mtlstudy table``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from study.errors import UserError, first_line

#: ``--format`` and ``--seeds`` choices: study.analysis's (not imported here: it loads pandas).
_FORMATS = ("text", "latex", "markdown", "csv")
_SEEDS = ("mean±std", "mean±sem", "mean", "mean+-std", "mean+-sem")


def _columns(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError(
            f"expected trial columns separated by commas, e.g. method,architecture; got {text!r}"
        )
    return names


def _cmd_table(args: argparse.Namespace) -> int:
    from study.analysis import PlotDataError, load_results, paper_table, render_table
    from study.store import readable

    if args.out is not None and not args.out.parent.is_dir():
        raise UserError(f"--out: folder {args.out.parent} does not exist")
    try:
        results = load_results([readable(location) for location in args.results])
        text = render_table(
            paper_table(results.trials, args.group_by, args.seeds), args.format, args.wide
        )
    except PlotDataError as err:
        raise UserError(first_line(err)) from None
    except (ValueError, KeyError) as err:
        raise UserError(f"table: {first_line(err)}") from None
    if args.out is None:
        sys.stdout.write(text)
        return 0
    from study.store import write_atomically

    try:
        write_atomically(args.out, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    except OSError as err:
        raise UserError(f"--out {args.out}: {first_line(err)}") from None
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def add_commands(commands: Any) -> None:
    table = commands.add_parser(
        "table",
        help="the leaderboard as papers print it: text, LaTeX (booktabs), Markdown or CSV",
    )
    table.add_argument(
        "results",
        nargs="+",
        help="results root(s) or study folder(s): paths, or URIs (s3://bucket/results)",
    )
    table.add_argument(
        "--format",
        choices=_FORMATS,
        default="text",
        help="text (the terminal, default), "
        "latex (booktabs tabular), markdown or csv (every mean and spread)",
    )
    table.add_argument(
        "--group-by",
        type=_columns,
        default=["method", "architecture"],
        help="one row per distinct value of these trial columns (default: method,architecture)",
    )
    table.add_argument(
        "--seeds",
        choices=_SEEDS,
        default="mean±std",
        help="what a cell shows over seeds: mean±std (default), mean±sem or mean",
    )
    table.add_argument(
        "--wide", action="store_true", help="text: every metric, not only those papers report"
    )
    table.add_argument("--out", type=Path, help="write to this file (atomically) instead of stdout")
    table.set_defaults(func=_cmd_table)
