"""Benchmarks that print figures: bench overhead, scaling, balancers, step, query, sharing,
search."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from study.bench.search_levers import Levers as _SearchLevers
from study.cli._common import _fraction, _method_name, _Parser, _positive_int, _stdout_to_stderr
from study.errors import UserError, first_line


def _cmd_bench_overhead(args: argparse.Namespace) -> int:
    from study.bench.overhead import measure_overhead

    with _stdout_to_stderr():
        figures = measure_overhead(trials=args.trials, epochs=args.epochs)
    print(json.dumps(figures, indent=2))
    return 0


def _cmd_bench_balancers(args: argparse.Namespace) -> int:
    from study.bench.balancers import format_table, measure_balancers

    with _stdout_to_stderr():
        figures = measure_balancers(
            num_tasks=tuple(args.tasks),
            methods=args.methods,
            image_size=args.image_size,
            batch_size=args.batch_size,
            rounds=args.rounds,
            compare_torchjd=args.compare_torchjd,
        )
    print(json.dumps(figures, indent=2) if args.json else format_table(figures))
    return 0


def _cmd_bench_step(args: argparse.Namespace) -> int:
    from study.bench.step import format_table, measure_step

    def measure() -> dict[str, Any]:
        with _stdout_to_stderr():
            return measure_step(
                architecture=args.architecture,
                method=args.method,
                batch_size=args.batch_size,
                image_size=args.image_size,
                steps=args.steps,
                warmup=args.warmup,
                precision=args.precision,
            )

    return _measured("step", measure, format_table, args.json)


def _progress(line: str) -> None:
    """A long benchmark's progress line, on stderr: stdout carries its figures."""
    print(line, file=sys.stderr, flush=True)


def _command_line() -> str:
    """The command as the user typed it, recorded beside its figures."""
    return shlex.join(["mtlstudy", *sys.argv[1:]])


def _measured(
    name: str,
    measure: Callable[[], dict[str, Any]],
    table: Callable[[dict[str, Any]], str],
    as_json: bool,
) -> int:
    """Run a benchmark; its figures as JSON or a table, a bad argument as one line."""
    try:
        figures = measure()
    except ValueError as err:
        raise UserError(f"bench {name}: {first_line(err)}") from None
    print(json.dumps(figures, indent=2) if as_json else table(figures))
    return 0


#: The options that shape bench sharing's random model.
_RANDOM_MODEL = (
    "backbone",
    "image_size",
    "patch_size",
    "depth",
    "weight_density",
    "activation_density",
)


def _cmd_bench_sharing(args: argparse.Namespace) -> int:
    from study.bench.sharing import format_table, measure_sharing, measure_trained_sharing

    shaping = [f"--{k.replace('_', '-')}" for k in _RANDOM_MODEL if getattr(args, k) is not None]
    if (args.study is None) != (args.trial is None):
        raise UserError("bench sharing: --study and --trial go together (a trained sub-task)")
    if args.trial is not None and shaping:
        raise UserError(
            f"bench sharing: {', '.join(shaping)} shape the random model; --trial measures "
            "the trained one as it is"
        )

    def measure() -> dict[str, Any]:
        if args.trial is not None:
            return measure_trained_sharing(
                args.study, args.trial, args.batch_size, args.rounds, args.threads
            )
        chosen = {k: getattr(args, k) for k in _RANDOM_MODEL if getattr(args, k) is not None}
        return measure_sharing(
            batch_size=args.batch_size, rounds=args.rounds, threads=args.threads, **chosen
        )

    return _measured("sharing", measure, format_table, args.json)


def _cmd_bench_query(args: argparse.Namespace) -> int:
    from study.bench.query import format_table, measure_query

    def measure() -> dict[str, Any]:
        return measure_query(
            trials=args.trials,
            history=args.history,
            files=args.files,
            threads=args.threads,
            folder=args.folder,
            rounds=args.rounds,
        )

    return _measured("query", measure, format_table, args.json)


def _cmd_bench_startup(args: argparse.Namespace) -> int:
    from study.bench.startup import format_table, measure_startup

    def measure() -> dict[str, Any]:
        return measure_startup(rounds=args.rounds, trials=args.trials)

    return _measured("startup", measure, format_table, args.json)


def _cmd_bench_search(args: argparse.Namespace) -> int:
    if not args.live:
        return _replay_search(args)
    live_only = [f"--{k.replace('_', '-')}" for k in ("table", "plot", "strategies")]
    given = [
        flag
        for flag, k in zip(live_only, ("table", "plot", "strategies"), strict=True)
        if getattr(args, k) is not None
    ]
    if given:
        raise UserError(f"bench search: {', '.join(given)} replay the table; not with --live")
    from study.bench.search import Levers, format_table, measure_search

    def measure() -> dict[str, Any]:
        levers = Levers(
            grace_period=args.grace_period,
            reduction_factor=args.reduction_factor,
            startup_trials=args.startup_trials,
            multivariate=args.multivariate,
            constant_liar=args.constant_liar,
        )
        with _stdout_to_stderr():
            figures = measure_search(
                seeds=args.seeds or 3,
                budget=args.budget or 80,
                epochs=args.epochs,
                results=args.results,
                train_samples=args.train_samples,
                image_size=args.image_size,
                concurrency=args.concurrency or 2,
                margin=args.margin,
                levers=levers,
                log=_progress,
            )
        return {"command": _command_line(), **figures}

    return _measured("search", measure, format_table, args.json)


def _replay_search(args: argparse.Namespace) -> int:
    from study.bench.replay import STRATEGIES
    from study.bench.replay_search import format_replay, measure_replay

    def measure() -> dict[str, Any]:
        with _stdout_to_stderr():
            figures = measure_replay(
                table_path=args.table,
                strategies=args.strategies or tuple(STRATEGIES),
                seeds=args.seeds or 100,
                budget=args.budget or 360,
                concurrency=args.concurrency or 4,
                grace_period=args.grace_period,
                reduction_factor=args.reduction_factor,
                startup_trials=args.startup_trials,
                plot=args.plot,
                log=_progress,
            )
        return {"command": _command_line(), **figures}

    return _measured("search", measure, format_replay, args.json)


def _cmd_bench_table(args: argparse.Namespace) -> int:
    from study.bench.table import train_table

    def measure() -> dict[str, Any]:
        with _stdout_to_stderr():
            return train_table(
                args.out,
                limit=args.limit,
                jobs=args.jobs,
                log=_progress,
            )

    return _measured("table", measure, lambda meta: json.dumps(meta, indent=2), True)


def _cmd_bench_scaling(args: argparse.Namespace) -> int:
    from study.bench.scaling import format_table, measure_scaling

    def measure() -> dict[str, Any]:
        with _stdout_to_stderr():
            return measure_scaling(
                trials=args.trials,
                concurrency=tuple(args.concurrency),
                epochs=args.epochs,
                results=args.results,
            )

    return _measured("scaling", measure, format_table, args.json)


def _non_negative_int(text: str) -> int:
    return 0 if text.strip() == "0" else _positive_int(text)


def _architecture_name(name: str) -> str:
    from models import list_models

    if name not in list_models():
        raise argparse.ArgumentTypeError(
            f"unknown architecture {name!r}; expected one of {list_models()}"
        )
    return name


def add_commands(commands: Any) -> None:
    bench = commands.add_parser("bench", help="benchmarks that print figures")
    benches = bench.add_subparsers(dest="bench", required=True, parser_class=_Parser)
    overhead = benches.add_parser("overhead", help="study wall time against a plain loop")
    overhead.add_argument("--trials", type=int, default=8)
    overhead.add_argument("--epochs", type=int, default=2)
    overhead.set_defaults(func=_cmd_bench_overhead)
    scaling = benches.add_parser(
        "scaling", help="trials per minute and overhead per trial at 1, 2, 4 trials at a time"
    )
    scaling.add_argument(
        "--trials", type=_positive_int, default=8, help="trials per concurrency level"
    )
    scaling.add_argument(
        "--concurrency", type=_positive_int, nargs="+", default=[1, 2, 4], help="trials at a time"
    )
    scaling.add_argument("--epochs", type=_positive_int, default=2)
    scaling.add_argument(
        "--results", type=Path, help="write the studies here (empty or new; default: a temp folder)"
    )
    scaling.add_argument("--json", action="store_true", help="print JSON, not a table")
    scaling.set_defaults(func=_cmd_bench_scaling)
    balancers = benches.add_parser("balancers", help="step time of every method against ew")
    balancers.add_argument("--tasks", type=int, nargs="+", default=[3, 5], choices=range(1, 6))
    balancers.add_argument("--methods", nargs="+", type=_method_name, default=None)
    balancers.add_argument("--image-size", type=_positive_int, default=64)
    balancers.add_argument("--batch-size", type=_positive_int, default=16)
    balancers.add_argument("--rounds", type=_positive_int, default=5)
    balancers.add_argument(
        "--compare-torchjd",
        action="store_true",
        help="also time torchjd's mtl_backward + jac_to_grad on the same network (mgda, upgrad)",
    )
    balancers.add_argument("--json", action="store_true", help="print JSON, not a table")
    balancers.set_defaults(func=_cmd_bench_balancers)
    step = benches.add_parser(
        "step", help="one trial's training step against the same model in a plain loop"
    )
    step.add_argument("--architecture", type=_architecture_name, default="hard_sharing")
    step.add_argument("--method", type=_method_name, default="ew")
    step.add_argument("--batch-size", type=_positive_int, default=8)
    step.add_argument("--image-size", type=_positive_int, default=64)
    step.add_argument("--steps", type=_positive_int, default=20, help="timed steps of each loop")
    step.add_argument("--warmup", type=_non_negative_int, default=3, help="untimed steps first")
    step.add_argument(
        "--precision",
        choices=["fp32", "bf16", "fp16"],
        help="default: bf16 on a GPU, fp32 on the CPU; fp16 needs a GPU",
    )
    step.add_argument("--json", action="store_true", help="print JSON, not a table")
    step.set_defaults(func=_cmd_bench_step)
    bench_query = benches.add_parser("query", help="filtered aggregates over a synthetic store")
    bench_query.add_argument("--trials", type=_positive_int, default=100_000)
    bench_query.add_argument("--history", type=_positive_int, default=10_000_000)
    bench_query.add_argument(
        "--files", type=_positive_int, default=600, help="trial files (and as many history)"
    )
    bench_query.add_argument("--rounds", type=_positive_int, default=5)
    bench_query.add_argument("--threads", type=_positive_int, help="Arrow CPU threads")
    bench_query.add_argument("--folder", type=Path, help="write the store here (empty or new)")
    bench_query.add_argument("--json", action="store_true", help="print JSON, not a table")
    bench_query.set_defaults(func=_cmd_bench_query)
    startup = benches.add_parser("startup", help="each CLI verb in a fresh process: time, memory")
    startup.add_argument("--rounds", type=_positive_int, default=3)
    startup.add_argument(
        "--trials", type=_positive_int, default=2_000, help="rows of the store query reads"
    )
    startup.add_argument("--json", action="store_true", help="print JSON, not a table")
    startup.set_defaults(func=_cmd_bench_startup)
    sharing = benches.add_parser("sharing", help="sub-task inference: sharing against dense")
    random_model = "the random model's; not with --trial"
    sharing.add_argument("--backbone", help=f"{random_model} (default vit_small_patch16_224)")
    sharing.add_argument("--image-size", type=_positive_int, help=f"{random_model} (224)")
    sharing.add_argument("--patch-size", type=_positive_int, help=f"{random_model} (16)")
    sharing.add_argument("--depth", type=_positive_int, help=f"{random_model} (all blocks)")
    sharing.add_argument("--weight-density", type=_fraction, help=f"{random_model} (0.05)")
    sharing.add_argument("--activation-density", type=_fraction, help=f"{random_model} (0.1)")
    sharing.add_argument("--study", help="a staged vit_sharing study's folder, <results>/<name>")
    sharing.add_argument("--trial", help="the study's sub-task trial to measure, as trained")
    sharing.add_argument("--batch-size", type=_positive_int, default=1)
    sharing.add_argument("--rounds", type=_positive_int, default=10)
    sharing.add_argument("--threads", type=_positive_int)
    sharing.add_argument("--json", action="store_true", help="print JSON, not a table")
    sharing.set_defaults(func=_cmd_bench_sharing)
    # The defaults, without importing Ray and Optuna with the parser.
    levers = _SearchLevers()
    search = benches.add_parser(
        "search",
        help="search strategies replayed on the tabular benchmark (--live: trained live)",
    )
    search.add_argument(
        "--live", action="store_true", help="train every trial through Ray Tune (20 minutes)"
    )
    search.add_argument("--table", type=Path, help="the table to replay (default: the one shipped)")
    search.add_argument(
        "--strategies", nargs="+", help="replayed strategies (default: all; random among them)"
    )
    search.add_argument("--plot", type=Path, help="draw the anytime curve to this file")
    search.add_argument(
        "--seeds", type=_positive_int, help="search seeds (default: 100 replayed, 3 live)"
    )
    search.add_argument(
        "--budget",
        type=_positive_int,
        help="trial-epochs per search (default: 360 replayed, 80 live)",
    )
    search.add_argument("--epochs", type=_positive_int, default=4, help="epochs of a live trial")
    search.add_argument(
        "--results", type=Path, help="write the results here (empty or new; default: temporary)"
    )
    search.add_argument(
        "--train-samples",
        type=_positive_int,
        default=256,
        help="synthetic training images (validation: a quarter, at least 8)",
    )
    search.add_argument("--image-size", type=_positive_int, default=32)
    search.add_argument(
        "--concurrency",
        type=_positive_int,
        help="trials at a time (default: 4 replayed, 2 live)",
    )
    search.add_argument(
        "--margin", type=float, default=1.0, help="Δm points below the best that count as reached"
    )
    search.add_argument(
        "--grace-period",
        type=_positive_int,
        default=levers.grace_period,
        help="ASHA's first rung, in epochs",
    )
    search.add_argument(
        "--reduction-factor",
        type=float,
        default=levers.reduction_factor,
        help="ASHA keeps the top 1/this of the trials at each rung",
    )
    search.add_argument(
        "--startup-trials",
        type=_positive_int,
        default=levers.startup_trials,
        help="TPE's random start-up trials",
    )
    search.add_argument(
        "--multivariate",
        action=argparse.BooleanOptionalAction,
        default=levers.multivariate,
        help="TPE's joint density over the parameters",
    )
    search.add_argument(
        "--constant-liar",
        action=argparse.BooleanOptionalAction,
        default=levers.constant_liar,
        help="TPE counts running trials as bad so concurrent ones spread out",
    )
    search.add_argument("--json", action="store_true", help="print JSON, not a table")
    search.set_defaults(func=_cmd_bench_search)
    table = benches.add_parser(
        "table", help="train the tabular search benchmark (resumable; about an hour of a core)"
    )
    table.add_argument("--out", type=Path, required=True, help="the table's Parquet file")
    table.add_argument(
        "--limit", type=_positive_int, help="only the first configurations (a trial run)"
    )
    table.add_argument(
        "--jobs", type=_positive_int, default=1, help="configurations trained at a time"
    )
    table.set_defaults(func=_cmd_bench_table)
