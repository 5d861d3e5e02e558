"""Compacting a study's store: compact."""

from __future__ import annotations

import argparse
from typing import Any

from study.errors import UserError, first_line


def _cmd_compact(args: argparse.Namespace) -> int:
    from study.store import compact

    for location in args.studies:
        try:
            result = compact(location)
        except (OSError, ValueError) as err:
            raise UserError(f"compact {location}: {first_line(err)}") from None
        print(result.line())
    return 0


def add_commands(commands: Any) -> None:
    compact = commands.add_parser(
        "compact",
        help="merge a study's per-trial files into a few large ones",
        description="Merge the per-trial Parquet files of each study into one compacted file "
        "per kind (trials; history sorted by trial and epoch). Atomic and idempotent; safe "
        "beside a running study (a trial file written meanwhile is kept, and read in place "
        "of its compacted rows). A study at a URI (s3://bucket/results/STUDY) is compacted "
        "through a local mirror. Studies compact themselves when they end "
        "(spec compact_on_finish).",
    )
    compact.add_argument(
        "studies", nargs="+", metavar="RESULTS/STUDY", help="study folder(s) or URI(s)"
    )
    compact.set_defaults(func=_cmd_compact)
