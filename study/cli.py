"""The ``mtlstudy`` command line."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import NoReturn

from cluster import ClusterError
from search_spaces import SearchSpaceError
from study.errors import UserError

__all__ = ["main"]

_USER_ERRORS = (UserError, ClusterError, SearchSpaceError, FileNotFoundError)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, as for every other user error; `-h` still shows the usage.
        raise UserError(f"{self.prog}: {message} (see '{self.prog} -h')")


def _demo_spec() -> Path:
    return Path(str(resources.files("study") / "specs" / "demo.yaml"))


def _cmd_run(args: argparse.Namespace) -> int:
    from study.spec import load_spec

    spec, space = load_spec(args.spec)
    if args.results is not None:
        spec = spec.model_copy(update={"results": args.results})
    from study.leaderboard import leaderboard, stage_table
    from study.store import load_trials
    from study.tuner import run_study

    outcome = run_study(
        spec,
        space,
        address=args.address,
        log=lambda line: print(line, flush=True),
        resume=args.resume,
    )
    trials = load_trials(outcome.results)
    print()
    if spec.stages is not None:
        print(stage_table(trials, [(stage.name, stage.task) for stage in spec.stages]))
    else:
        print(leaderboard(trials, spec.tasks))
    if spec.baselines != "none":
        model = ", ".join(f"{k}={v}" for k, v in spec.baseline_model.items())
        print(f"Δm against single-task {spec.architecture}{f' ({model})' if model else ''}")
    print()
    finished = int((trials["kind"] == "multi_task").sum()) if "kind" in trials else 0
    print(f"{finished} multi-task trials, {outcome.errors} failed")
    print(f"results: {outcome.results}  (try: mtlstudy query {outcome.results})")
    return 1 if outcome.errors and finished == 0 else 0


def _cmd_demo(args: argparse.Namespace) -> int:
    args.spec = _demo_spec()
    return _cmd_run(args)


def _cmd_query(args: argparse.Namespace) -> int:
    from study.results import load

    if args.format == "parquet" and args.out is None:
        raise UserError("query: --format parquet writes a file; give it with --out FILE")
    if args.out is not None and not args.out.parent.is_dir():
        raise UserError(f"--out: folder {args.out.parent} does not exist")
    kind = "history" if args.history else "trials"
    try:
        frame = load(args.results, kind, where=args.where, columns=args.columns)
    except (ValueError, KeyError, SyntaxError) as err:
        raise UserError(f"query: {str(err).strip().splitlines()[0]}") from None
    if args.sort:
        missing = [c for c in args.sort if c not in frame]
        if missing:
            raise UserError(f"--sort: no column(s) {missing}; see --columns")
        frame = frame.sort_values(args.sort, ascending=not args.descending)
    if args.limit is not None:
        frame = frame.head(args.limit)
    text: str | None = None  # parquet is binary and goes to --out only
    if args.format == "csv":
        text = frame.to_csv(index=False)
    elif args.format == "json":
        text = frame.to_json(orient="records", indent=1, default_handler=str) + "\n"
    elif args.format == "table":
        text = frame.to_string(index=False, max_colwidth=40) if not frame.empty else "no rows"
        text += "\n"
    if args.out is None:
        sys.stdout.write(text or "")
        return 0
    # A hidden temporary name renamed over --out: a reader never sees half a file.
    tmp = args.out.with_name(f".{args.out.name}.{os.getpid()}.tmp")
    try:
        if text is None:
            frame.to_parquet(tmp, index=False)
        else:
            tmp.write_text(text)
        os.replace(tmp, args.out)
    except (OSError, ValueError, TypeError) as err:
        raise UserError(f"--out {args.out}: {str(err).strip().splitlines()[0]}") from None
    finally:
        tmp.unlink(missing_ok=True)
    print(f"wrote {len(frame)} rows to {args.out}", file=sys.stderr)
    return 0


#: `mtlstudy plot --kind` choices: study.analysis.KINDS (not imported here: it loads torch).
_PLOT_KINDS = ("pareto", "heatmap", "ranks", "curves", "weights", "parallel", "importance")


def _first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


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
        results = load_results(args.results)
    except (ValueError, KeyError) as err:
        raise UserError(f"plot: {_first_line(err)}") from None
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
                raise UserError(_first_line(err)) from None
            print(f"skipped {kind}: {_first_line(err)}", file=sys.stderr)
            continue
        except ValueError as err:
            raise UserError(f"plot {kind}: {_first_line(err)}") from None
        try:
            paths = save_figure(plot.figure, args.out, kind)
        except OSError as err:
            raise UserError(f"--out {args.out}: {_first_line(err)}") from None
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

    if args.out.is_dir():
        raise UserError(f"--out: {args.out} is a folder; expected an HTML file name")
    if not args.out.parent.is_dir():
        raise UserError(f"--out: folder {args.out.parent} does not exist")
    try:
        path = write_report(args.results, args.out)
    except PlotDataError as err:
        raise UserError(_first_line(err)) from None
    except (ValueError, KeyError) as err:
        raise UserError(f"report: {_first_line(err)}") from None
    except OSError as err:
        raise UserError(f"--out {args.out}: {_first_line(err)}") from None
    print(f"wrote {path}")
    return 0


def _cmd_methods(args: argparse.Namespace) -> int:
    from models import balancing

    print(f"{'method':13s} {'reads':22s} hyperparameters (defaults)")
    for name in balancing.list_methods():
        hp = {k: v for k, v in balancing.defaults(name).items() if k != "potentials"}
        print(f"{name:13s} {balancing.reads(name):22s} {json.dumps(hp)}")
        print(f"{'':13s} {balancing.paper(name)}")
    return 0


def _cmd_bench_overhead(args: argparse.Namespace) -> int:
    from study.bench.overhead import measure_overhead

    with _stdout_to_stderr():
        figures = measure_overhead(trials=args.trials, epochs=args.epochs)
    print(json.dumps(figures, indent=2))
    return 0


def _print_counts(counts: dict[str, dict[str, int]]) -> None:
    columns = sorted({task for tasks in counts.values() for task in tasks})
    print(f"{'split':8s}" + "".join(f"{c:>12s}" for c in columns))
    for split, tasks in counts.items():
        print(f"{split:8s}" + "".join(f"{tasks.get(c, 0):12d}" for c in columns))


def _cmd_data_check(args: argparse.Namespace) -> int:
    from study.data.formats import describe_dataset

    _print_counts(describe_dataset(args.root, args.format))
    return 0


def _cmd_data_synth(args: argparse.Namespace) -> int:
    from study.data.formats import synthesize

    counts = synthesize(
        args.out,
        args.format,
        train=args.train,
        val=args.val,
        image_size=args.image_size,
        seed=args.seed,
    )
    print(f"wrote a synthetic {args.format} dataset to {args.out}")
    _print_counts(counts)
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
        )
    print(json.dumps(figures, indent=2) if args.json else format_table(figures))
    return 0


def _cmd_bench_sharing(args: argparse.Namespace) -> int:
    from study.bench.sharing import format_table, measure_sharing

    try:
        figures = measure_sharing(
            backbone=args.backbone,
            image_size=args.image_size,
            patch_size=args.patch_size,
            batch_size=args.batch_size,
            weight_density=args.weight_density,
            activation_density=args.activation_density,
            rounds=args.rounds,
            threads=args.threads,
            depth=args.depth,
        )
    except ValueError as err:
        raise UserError(f"bench sharing: {str(err).strip().splitlines()[0]}") from None
    print(json.dumps(figures, indent=2) if args.json else format_table(figures))
    return 0


def _cmd_bench_query(args: argparse.Namespace) -> int:
    from study.bench.query import format_table, measure_query

    try:
        figures = measure_query(
            trials=args.trials,
            history=args.history,
            files=args.files,
            threads=args.threads,
            folder=args.folder,
            rounds=args.rounds,
        )
    except ValueError as err:
        raise UserError(f"bench query: {str(err).strip().splitlines()[0]}") from None
    print(json.dumps(figures, indent=2) if args.json else format_table(figures))
    return 0


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    # DeepSpeed and Ray print to stdout from loggers bound at import; keep stdout pure JSON.
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _jobs_address(args: argparse.Namespace) -> str:
    from cluster import jobs_address

    return jobs_address(args.address)


def _cmd_submit(args: argparse.Namespace) -> int:
    from cluster import submit_study
    from search_spaces import read_model
    from study.spec import SpecError, StudySpec

    read_model(args.spec, StudySpec, SpecError, "spec")  # a bad field fails before the upload
    address = _jobs_address(args)
    job_id = submit_study(args.spec, address, results=args.results)
    print(job_id)
    print(f"follow:  mtlstudy jobs logs {job_id} --follow --address {address}")
    print(f"status:  mtlstudy jobs status {job_id} --address {address}")
    print(f"stop:    mtlstudy jobs stop {job_id} --address {address}")
    return 0


def _when(seconds: float | None) -> str:
    import datetime

    if seconds is None:
        return "-"
    return datetime.datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S")


def _cmd_jobs_list(args: argparse.Namespace) -> int:
    from cluster import list_jobs

    jobs = list_jobs(_jobs_address(args))
    if not jobs:
        print("no jobs")
        return 0
    width = max(len("job"), *(len(j.job_id) for j in jobs))
    study = max(len("study"), *(len(j.study or "-") for j in jobs))
    print(f"{'job':{width}s}  {'status':9s}  {'study':{study}s}  {'started':19s}  ended")
    for j in jobs:
        print(
            f"{j.job_id:{width}s}  {j.status:9s}  {j.study or '-':{study}s}  "
            f"{_when(j.start_time):19s}  {_when(j.end_time)}"
        )
    return 0


def _cmd_jobs_status(args: argparse.Namespace) -> int:
    from cluster import job_status

    job = job_status(_jobs_address(args), args.job)
    print(job.status)
    if job.message.strip():
        print(job.message.strip().splitlines()[0])  # Ray appends the last logs; see `jobs logs`
    return 0


def _cmd_jobs_logs(args: argparse.Namespace) -> int:
    from cluster import job_logs

    for chunk in job_logs(_jobs_address(args), args.job, follow=args.follow):
        sys.stdout.write(chunk)
        sys.stdout.flush()
    return 0


def _cmd_jobs_stop(args: argparse.Namespace) -> int:
    from cluster import job_status, stop_job

    address = _jobs_address(args)
    if stop_job(address, args.job):
        print(f"stop requested for {args.job}")
        print(f"status:  mtlstudy jobs status {args.job} --address {address}")
    else:
        print(f"{args.job} had already ended: {job_status(address, args.job).status}")
    return 0


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1], got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _method_name(name: str) -> str:
    from models import balancing

    if name not in balancing.list_methods():
        raise argparse.ArgumentTypeError(
            f"unknown method {name!r}; expected one of {balancing.list_methods()}"
        )
    return name


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mtlstudy", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

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
    run.set_defaults(func=_cmd_run)
    demo.set_defaults(func=_cmd_demo)

    query = commands.add_parser("query", help="read trials (or history) from Parquet results")
    query.add_argument("results", nargs="+", type=Path, help="results root(s) or study folder(s)")
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
    plot.add_argument("results", nargs="+", type=Path, help="results root(s) or study folder(s)")
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
    report = commands.add_parser("report", help="write a self-contained HTML report")
    report.add_argument("results", nargs="+", type=Path, help="results root(s) or study folder(s)")
    report.add_argument("--out", type=Path, required=True, help="the HTML file to write")
    report.set_defaults(func=_cmd_report)

    methods = commands.add_parser("methods", help="list balancing methods and defaults")
    methods.set_defaults(func=_cmd_methods)

    submit = commands.add_parser("submit", help="run a study on a Ray cluster as a Ray job")
    submit.add_argument("spec", type=Path, help="a study spec (YAML)")
    submit.add_argument(
        "--results", help="results root on the cluster, absolute (default: the spec's)"
    )
    jobs = commands.add_parser("jobs", help="follow studies submitted as Ray jobs")
    jobs_commands = jobs.add_subparsers(dest="jobs", required=True, parser_class=_Parser)
    jobs_list = jobs_commands.add_parser("list", help="submitted jobs, their status and study")
    jobs_status = jobs_commands.add_parser("status", help="a job's status")
    jobs_logs = jobs_commands.add_parser("logs", help="a job's output")
    jobs_logs.add_argument("--follow", action="store_true", help="until the job ends")
    jobs_stop = jobs_commands.add_parser("stop", help="stop a job")
    for sub in (jobs_status, jobs_logs, jobs_stop):
        sub.add_argument("job", help="the job id 'mtlstudy submit' printed")
    for sub in (submit, jobs_list, jobs_status, jobs_logs, jobs_stop):
        sub.add_argument(
            "--address",
            help="the cluster's Jobs API, http://HEAD:8265 (default: $RAY_API_SERVER_ADDRESS, "
            "$RAY_ADDRESS, or http://127.0.0.1:8265)",
        )
    submit.set_defaults(func=_cmd_submit)
    jobs_list.set_defaults(func=_cmd_jobs_list)
    jobs_status.set_defaults(func=_cmd_jobs_status)
    jobs_logs.set_defaults(func=_cmd_jobs_logs)
    jobs_stop.set_defaults(func=_cmd_jobs_stop)

    data = commands.add_parser("data", help="check a dataset folder, or write a synthetic one")
    datas = data.add_subparsers(dest="data", required=True, parser_class=_Parser)
    check = datas.add_parser("check", help="validate a dataset; print counts per split and task")
    check.add_argument("root", type=Path)
    synth = datas.add_parser("synth", help="write synthetic scenes in a real dataset layout")
    synth.add_argument("out", type=Path)
    synth.add_argument("--train", type=_positive_int, default=32)
    synth.add_argument("--val", type=_positive_int, default=8)
    synth.add_argument("--image-size", type=_positive_int, default=64)
    synth.add_argument("--seed", type=int, default=0)
    for sub in (check, synth):
        sub.add_argument("--format", choices=("nyud", "pascal", "voc"), required=True)
    check.set_defaults(func=_cmd_data_check)
    synth.set_defaults(func=_cmd_data_synth)

    bench = commands.add_parser("bench", help="benchmarks that print figures")
    benches = bench.add_subparsers(dest="bench", required=True, parser_class=_Parser)
    overhead = benches.add_parser("overhead", help="study wall time against a plain loop")
    overhead.add_argument("--trials", type=int, default=8)
    overhead.add_argument("--epochs", type=int, default=2)
    overhead.set_defaults(func=_cmd_bench_overhead)
    balancers = benches.add_parser("balancers", help="step time of every method against ew")
    balancers.add_argument("--tasks", type=int, nargs="+", default=[3, 5], choices=range(1, 6))
    balancers.add_argument("--methods", nargs="+", type=_method_name, default=None)
    balancers.add_argument("--image-size", type=_positive_int, default=64)
    balancers.add_argument("--batch-size", type=_positive_int, default=16)
    balancers.add_argument("--rounds", type=_positive_int, default=5)
    balancers.add_argument("--json", action="store_true", help="print JSON, not a table")
    balancers.set_defaults(func=_cmd_bench_balancers)
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
    sharing = benches.add_parser("sharing", help="sub-task inference: sharing against dense")
    sharing.add_argument("--backbone", default="vit_small_patch16_224")
    sharing.add_argument("--image-size", type=_positive_int, default=224)
    sharing.add_argument("--patch-size", type=_positive_int, default=16)
    sharing.add_argument("--depth", type=_positive_int, help="encoder blocks (default: all)")
    sharing.add_argument("--batch-size", type=_positive_int, default=1)
    sharing.add_argument("--weight-density", type=_fraction, default=0.05)
    sharing.add_argument("--activation-density", type=_fraction, default=0.1)
    sharing.add_argument("--rounds", type=_positive_int, default=10)
    sharing.add_argument("--threads", type=_positive_int)
    sharing.add_argument("--json", action="store_true", help="print JSON, not a table")
    sharing.set_defaults(func=_cmd_bench_sharing)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        return int(args.func(args))
    except _USER_ERRORS as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"mtlstudy: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mtlstudy: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader (e.g. `| head`) left; silence the flush at exit too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
