"""Studies as Ray jobs: submit a spec to a cluster's Jobs API, then follow or stop it.

The project's code travels as the job's ``working_dir``: a filtered copy of the source
tree (the folder holding ``pyproject.toml``), with the spec placed inside it. That
filter is the only one: ``.gitignore`` files stay out of the copy, so Ray does not
apply them too. A spec that lives in the project keeps its place; one from elsewhere
goes to ``_submitted/`` with the search-space file it names. The job runs ``python -m
study.cli run SPEC --address auto --resume --allow-fresh`` on the head node, with the head's
``python`` (the one first on the PATH Ray was started with); a study submitted again
under the same name and results root resumes instead of starting over.

Token authentication: the Jobs API is asked for its authentication mode first
(``/api/authentication_mode`` needs no token); when it is ``token``, the token comes
from Ray's own loader, i.e. ``RAY_AUTH_TOKEN``, then ``RAY_AUTH_TOKEN_PATH``, then
``~/.ray/auth_token``. It is sent only to a cluster that asks for it, and it never
appears in a message: every failure is one :class:`ClusterError` line naming the address.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shlex
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

from cluster._client import _client, _fail, _jobs_url, _quiet, _quiet_ray
from cluster._upload import (
    _check_paths,
    _copy_project,
    _place_spec,
    _project_root,
    _read_spec,
    _runtime_excludes,
    is_uri,
)

__all__ = [
    "JobSummary",
    "job_logs",
    "job_status",
    "list_jobs",
    "stop_job",
    "submit_study",
]

#: Job metadata key holding the study's name.
_STUDY_KEY = "mtlstudy_study"


@dataclass(frozen=True)
class JobSummary:
    """One submitted job as the Jobs API reports it."""

    job_id: str
    status: str
    study: str | None
    message: str
    entrypoint: str
    start_time: float | None  # seconds since the epoch
    end_time: float | None


@_quiet
def submit_study(
    spec_path: str | Path,
    address: str,
    extra_args: Sequence[str] = (),
    results: str | None = None,
) -> str:
    """Submit the study ``spec_path`` describes as a Ray job; return the job's id.

    ``extra_args`` are appended to ``mtlstudy run``; ``results`` overrides the spec's
    results root, which must be absolute (the job's own folder is temporary).
    """
    url = _jobs_url(address)
    spec_path = Path(spec_path)
    data = _read_spec(spec_path)
    name = data["name"]
    chosen = _check_paths(spec_path, data, results)
    root = _project_root()
    client = _client(url)
    job_id = f"{name}-{secrets.token_hex(4)}"
    with tempfile.TemporaryDirectory(prefix="mtlstudy-submit-") as tmp:
        stage = Path(tmp) / root.name
        _copy_project(root, stage, keep_out=[] if is_uri(chosen) else [Path(chosen)])
        placed = _place_spec(spec_path, data, root, stage)
        # A study submitted again under its name goes on where it stood; a new one starts.
        command = [
            *("python", "-m", "study.cli", "run", placed.as_posix()),
            *("--address", "auto", "--resume", "--allow-fresh"),
        ]
        if results is not None:
            command += ["--results", results]
        try:
            return str(
                client.submit_job(
                    entrypoint=shlex.join([*command, *extra_args]),
                    submission_id=job_id,
                    runtime_env={"working_dir": str(stage), "excludes": _runtime_excludes()},
                    metadata={_STUDY_KEY: name},
                )
            )
        except Exception as err:  # every failure becomes one line
            raise _fail(url, err) from None


# --- following jobs --------------------------------------------------------------------


def _summary(details: Any) -> JobSummary:
    def seconds(ms: int | None) -> float | None:
        return ms / 1000 if ms else None

    return JobSummary(
        job_id=details.submission_id or details.job_id or "",
        status=str(getattr(details.status, "value", details.status)),
        study=(details.metadata or {}).get(_STUDY_KEY),
        message=details.message or "",
        entrypoint=details.entrypoint or "",
        start_time=seconds(details.start_time),
        end_time=seconds(details.end_time),
    )


@_quiet
def list_jobs(address: str) -> list[JobSummary]:
    """The cluster's submitted jobs, oldest first."""
    url = _jobs_url(address)
    client = _client(url)
    try:
        jobs = client.list_jobs()
    except Exception as err:
        raise _fail(url, err) from None
    rows = [_summary(j) for j in jobs if j.submission_id]
    return sorted(rows, key=lambda j: j.start_time or 0.0)


def _info(client: JobSubmissionClient, url: str, job_id: str) -> JobSummary:
    try:
        return _summary(client.get_job_info(job_id))
    except Exception as err:
        raise _fail(url, err, job_id) from None


@_quiet
def job_status(address: str, job_id: str) -> JobSummary:
    """The job's status (PENDING, RUNNING, STOPPED, SUCCEEDED, FAILED) and message."""
    url = _jobs_url(address)
    return _info(_client(url), url, job_id)


@_quiet
def job_logs(address: str, job_id: str, follow: bool = False) -> Iterator[str]:
    """The job's output so far; with ``follow``, chunks as they come until the job ends."""
    url = _jobs_url(address)
    client = _client(url)
    _info(client, url, job_id)  # an unknown id fails here, before any output
    if not follow:
        try:
            return iter([client.get_job_logs(job_id)])
        except Exception as err:
            raise _fail(url, err, job_id) from None
    return _tail(client, url, job_id)


def _tail(client: JobSubmissionClient, url: str, job_id: str) -> Iterator[str]:
    loop = asyncio.new_event_loop()
    chunks = client.tail_job_logs(job_id)
    try:
        while True:
            try:
                with _quiet_ray():
                    chunk = loop.run_until_complete(chunks.__anext__())
            except StopAsyncIteration:
                return
            except Exception as err:
                raise _fail(url, err, job_id) from None
            yield chunk
    finally:
        with contextlib.suppress(Exception):
            loop.run_until_complete(chunks.aclose())
        loop.close()


@_quiet
def stop_job(address: str, job_id: str) -> bool:
    """Ask the job to stop; False when it had already ended."""
    url = _jobs_url(address)
    client = _client(url)
    try:
        return bool(client.stop_job(job_id))
    except Exception as err:
        raise _fail(url, err, job_id) from None
