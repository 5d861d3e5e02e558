"""Running studies: run, demo, methods."""

from __future__ import annotations

import argparse
import json
import sys
from importlib import resources
from pathlib import Path
from typing import Any


def _demo_spec() -> Path:
    return Path(str(resources.files("study") / "specs" / "demo.yaml"))


def _progress(line: str) -> None:
    # On stderr, so the leaderboard on stdout stays clean to pipe.
    print(line, file=sys.stderr, flush=True)


#: ``mtlstudy run``'s exit statuses; 2 is a user error, 128 + N a stop by signal N.
EXIT_COMPLETED = 0
EXIT_ALL_FAILED = 1
EXIT_SOME_FAILED = 3


def exit_status(trials: Any) -> int:
    """The outcome of a study's multi-task trials (a trials DataFrame): all of them
    finished (completed or stopped early by the scheduler), some failed, or all failed."""
    if "kind" not in trials or "status" not in trials:
        return EXIT_COMPLETED
    statuses = trials.loc[trials["kind"] == "multi_task", "status"]
    failed = int((statuses == "error").sum())
    if failed and failed == len(statuses):
        return EXIT_ALL_FAILED
    return EXIT_SOME_FAILED if failed else EXIT_COMPLETED


def _cmd_run(args: argparse.Namespace) -> int:
    from study.spec import check_results, load_spec

    spec, space = load_spec(args.spec)
    if args.results is not None:
        check_results(args.results, "--results")
        spec = spec.model_copy(update={"results": args.results})
    from study.analysis import stage_table, study_summary
    from study.run import StudyInterrupted, run_study
    from study.store import load_trials

    try:
        outcome = run_study(
            spec,
            space,
            address=args.address,
            log=lambda line: print(line, flush=True),
            resume=args.resume,
            progress=_progress,
            verbose=args.verbose,
            allow_fresh=args.allow_fresh,
        )
    except StudyInterrupted as stop:
        again = f"mtlstudy run {args.spec} --resume"
        if args.results is not None:
            again += f" --results {args.results}"
        print(
            f"mtlstudy: {stop}; finished trials are kept. Resume with: {again}",
            file=sys.stderr,
        )
        return stop.exit_status
    trials = load_trials(outcome.results)
    print()
    if spec.stages is not None:
        print(stage_table(trials, [(stage.name, stage.task) for stage in spec.stages]))
    else:
        print(
            study_summary(trials, spec.tasks, spec.search_objectives, spec.repeats, wide=args.wide)
        )
    if spec.baselines != "none":
        model = ", ".join(f"{k}={v}" for k, v in spec.baseline_model.items())
        print(f"Δm against single-task {spec.architecture}{f' ({model})' if model else ''}")
    print()
    multi = trials[trials["kind"] == "multi_task"] if "kind" in trials else trials.iloc[:0]
    failed = int((multi["status"] == "error").sum()) if "status" in multi else 0
    print(f"{len(multi) - failed} multi-task trials finished, {failed} failed")
    print(f"results: {outcome.location}  (try: mtlstudy query {outcome.location})")
    return exit_status(trials)


def _cmd_demo(args: argparse.Namespace) -> int:
    args.spec = _demo_spec()
    return _cmd_run(args)


def _cmd_methods(args: argparse.Namespace) -> int:
    from models import balancing

    if args.markdown:
        print(balancing.methods_markdown(), end="")
        return 0
    print(f"{'method':13s} {'reads':22s} hyperparameters (defaults)")
    for name in balancing.list_methods():
        hp = {k: v for k, v in balancing.defaults(name).items() if k != "potentials"}
        print(f"{name:13s} {balancing.reads(name):22s} {json.dumps(hp)}")
        print(f"{'':13s} {balancing.paper(name)}")
    return 0


def add_commands(commands: Any) -> None:
    run = commands.add_parser("run", help="run the study a spec describes")
    run.add_argument("spec", type=Path, help="a study spec (YAML)")
    demo = commands.add_parser("demo", help="run the built-in demo study")
    for sub in (run, demo):
        sub.add_argument("--address", help="an existing Ray cluster (default: a local Ray)")
        sub.add_argument("--results", help="results root (default: the spec's 'results')")
        sub.add_argument(
            "--resume",
            action="store_true",
            help="continue the study a killed run left: finished trials are kept",
        )
        sub.add_argument(
            "--allow-fresh",
            action="store_true",
            help="with --resume: start the study when there is nothing to resume",
        )
        sub.add_argument(
            "--verbose", action="store_true", help="also show Ray Tune's own status table"
        )
        sub.add_argument(
            "--wide",
            action="store_true",
            help="the final leaderboard with every metric and the hyperparameters",
        )
    run.set_defaults(func=_cmd_run)
    demo.set_defaults(func=_cmd_demo)

    methods = commands.add_parser("methods", help="list balancing methods and defaults")
    methods.add_argument(
        "--markdown", action="store_true", help="the table of docs/METHODS.md, in Markdown"
    )
    methods.set_defaults(func=_cmd_methods)
