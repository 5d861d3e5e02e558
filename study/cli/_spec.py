"""The spec reference: spec."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def _cmd_spec(args: argparse.Namespace) -> int:
    from study.spec import spec_markdown

    # Written as is: the text ends in its own newline, so a redirect reproduces docs/SPEC.md.
    sys.stdout.write(spec_markdown())
    return 0


def add_commands(commands: Any) -> None:
    spec = commands.add_parser(
        "spec",
        help="print the reference of every spec field",
        description="Print the reference of every spec field, its type, default and meaning, "
        "rendered from the spec's own models. Markdown is the only format, so the output is "
        "the same with or without --markdown. docs/SPEC.md is this output; regenerate it "
        "with 'mtlstudy spec --markdown > docs/SPEC.md'.",
    )
    spec.add_argument(
        "--markdown", action="store_true", help="Markdown (the default and only format)"
    )
    spec.set_defaults(func=_cmd_spec)
