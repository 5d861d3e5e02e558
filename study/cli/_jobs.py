"""Studies on a cluster as Ray jobs: submit, jobs list/status/logs/stop."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from study.cli._common import _Parser


def _jobs_address(args: argparse.Namespace) -> str:
    import os

    from cluster import TOKEN_OVER_HTTP_ENV, jobs_address

    if args.token_over_http:
        os.environ[TOKEN_OVER_HTTP_ENV] = "1"
    return jobs_address(args.address)


def _cluster_hint(command: Callable[[argparse.Namespace], int]) -> Callable[..., int]:
    """An unreachable cluster's error says how to name the right one."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        from cluster import ClusterError

        try:
            return command(args)
        except ClusterError as err:
            if not str(err).startswith("cannot reach"):
                raise
            raise ClusterError(
                f"{err}; is a cluster running there? Name its Jobs API with --address "
                "http://HEAD:8265 or RAY_ADDRESS"
            ) from None

    return run


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


def add_commands(commands: Any) -> None:
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
        sub.add_argument(
            "--token-over-http",
            action="store_true",
            help="send the cluster's token over plain http to another machine (readable on "
            "the way; see docs/CLUSTER.md); by default only https or this machine get it",
        )
    submit.set_defaults(func=_cluster_hint(_cmd_submit))
    jobs_list.set_defaults(func=_cluster_hint(_cmd_jobs_list))
    jobs_status.set_defaults(func=_cluster_hint(_cmd_jobs_status))
    jobs_logs.set_defaults(func=_cluster_hint(_cmd_jobs_logs))
    jobs_stop.set_defaults(func=_cluster_hint(_cmd_jobs_stop))
