"""The ``mtlstudy`` command line."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from study.cli import _bench, _compact, _data, _jobs, _results, _spec, _study, _table
from study.cli._common import _Parser
from study.cli._results import _PLOT_KINDS
from study.cli._study import _demo_spec
from study.errors import first_line

__all__ = ["_PLOT_KINDS", "_demo_spec", "main"]

#: Errors a user's input causes, by module; a module never imported raised none of its own,
#: so the command line imports no package just to catch its errors.
_USER_ERRORS = {
    "study.errors": "UserError",
    "cluster._session": "ClusterError",
    "search_spaces._space": "SearchSpaceError",
}


def _user_errors() -> tuple[type[BaseException], ...]:
    loaded = (getattr(sys.modules[m], name) for m, name in _USER_ERRORS.items() if m in sys.modules)
    return (*loaded, FileNotFoundError)


def _parser() -> _Parser:
    parser = _Parser(prog="mtlstudy", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for group in (_study, _spec, _results, _table, _compact, _jobs, _data, _bench):
        group.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        return int(args.func(args))
    except Exception as err:
        if not isinstance(err, _user_errors()):
            raise
        print(f"mtlstudy: error: {first_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mtlstudy: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader (e.g. `| head`) left; silence the flush at exit too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
