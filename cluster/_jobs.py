"""Studies as Ray jobs: submit a spec to a cluster's Jobs API, then follow or stop it.

The project's code travels as the job's ``working_dir``: a filtered copy of the source
tree (the folder holding ``pyproject.toml``), with the spec placed inside it. That
filter is the only one: ``.gitignore`` files stay out of the copy, so Ray does not
apply them too. A spec that lives in the project keeps its place; one from elsewhere
goes to ``_submitted/`` with the search-space file it names. The job runs ``python -m
study.cli run SPEC --address auto`` on the head node, with the head's ``python``: the
one first on the PATH Ray was started with.

Token authentication: the Jobs API is asked for its authentication mode first
(``/api/authentication_mode`` needs no token); when it is ``token``, the token comes
from Ray's own loader, i.e. ``RAY_AUTH_TOKEN``, then ``RAY_AUTH_TOKEN_PATH``, then
``~/.ray/auth_token``. It is sent only to a cluster that asks for it, and it never
appears in a message: every failure is one :class:`ClusterError` line naming the address.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import functools
import logging
import os
import re
import secrets
import shlex
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar
from urllib.parse import urlsplit

import yaml

from cluster._session import ClusterError

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

__all__ = [
    "JobSummary",
    "job_logs",
    "job_status",
    "jobs_address",
    "list_jobs",
    "stop_job",
    "submit_study",
]

#: Job metadata key holding the study's name.
_STUDY_KEY = "mtlstudy_study"
#: Where a spec from outside the project goes in the uploaded copy.
_SUBMITTED = "_submitted"
#: Left out of the upload: at the top of the project, and anywhere in it.
_TOP_EXCLUDES = (".venv", ".git", "results", "build", ".torch_extensions")
_ANY_EXCLUDES = ("__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache", "*.parquet")
#: Not copied, so that Ray's upload does not apply them on top of the filter above: an
#: unanchored ``results/`` in ``.gitignore`` would drop ``study/results/`` (tracked code).
_IGNORE_FILES = (".gitignore", ".rayignore")
#: Files larger than this stay behind (data, checkpoints): the code is small.
_MAX_FILE_BYTES = 8 * 2**20
_PROBE_TIMEOUT_S = 10.0
_DEFAULT_ADDRESS = "http://127.0.0.1:8265"
_TOKEN_SOURCES = "RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token"

_P = ParamSpec("_P")
_R = TypeVar("_R")


@contextlib.contextmanager
def _quiet_ray() -> Iterator[None]:
    """Ray's client logs uploads and sockets at INFO; the command's output is ours."""
    import ray.job_submission  # noqa: F401 - sets up Ray's logger and its handler

    # Some of its modules set their own level, so the handler is what filters.
    handlers = list(logging.getLogger("ray").handlers)
    levels = [h.level for h in handlers]
    for handler in handlers:
        handler.setLevel(max(handler.level, logging.WARNING))
    try:
        yield
    finally:
        for handler, level in zip(handlers, levels, strict=True):
            handler.setLevel(level)


def _quiet(func: Callable[_P, _R]) -> Callable[_P, _R]:
    @functools.wraps(func)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with _quiet_ray():
            return func(*args, **kwargs)

    return wrapper


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


# --- address and authentication -------------------------------------------------------


def _jobs_url(address: str) -> str:
    """``http://HOST:PORT`` (or ``https://``) from ``HOST:PORT`` or a URL; else one error."""
    text = address.strip().rstrip("/")
    if "://" not in text:
        text = f"http://{text}"
    expected = "expected the Jobs API of the head node, e.g. http://10.0.0.5:8265"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ClusterError(f"address {address!r} is not a Jobs API address; {expected}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path or parts.query:
        raise ClusterError(f"address {address!r} is not a Jobs API address; {expected}")
    if port is None and parts.scheme == "http":
        raise ClusterError(f"address {address!r} has no port; {expected}")
    return text


def jobs_address(address: str | None = None) -> str:
    """The Jobs API URL: ``address``, else ``$RAY_API_SERVER_ADDRESS``, ``$RAY_ADDRESS``,
    else ``http://127.0.0.1:8265``; ``HOST:PORT`` gets ``http://``, other forms are refused.
    """
    given = address or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS")
    return _jobs_url(given or _DEFAULT_ADDRESS)


def _raw_token() -> str | None:
    """The token from Ray's own sources, or None; never logged."""
    from ray._raylet import AuthenticationTokenLoader
    from ray.exceptions import AuthenticationError

    loader = AuthenticationTokenLoader.instance()
    loader.reset_cache()  # read the environment as it is now
    try:
        if not loader.has_token(ignore_auth_mode=True):
            return None
        return loader.get_raw_token(ignore_auth_mode=True) or None
    except AuthenticationError:
        path = os.environ.get("RAY_AUTH_TOKEN_PATH", "")
        raise ClusterError(
            f"RAY_AUTH_TOKEN_PATH is set, but {path!r} cannot be read or is empty; "
            "expected a file holding the cluster's token"
        ) from None
    finally:
        loader.reset_cache()  # leave no token cached in this process for others


def _scrub(text: str) -> str:
    """``text`` with the token, should a foreign message ever carry it, masked."""
    with contextlib.suppress(ClusterError, ImportError):
        token = _raw_token()
        if token:
            text = text.replace(token, "<token>")
    return text


def _reason(err: BaseException) -> str:
    """``Connection refused`` out of requests' nested connection errors."""
    text = str(err)
    found = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if found:
        return found.group(1).strip()
    if "timed out" in text.lower() or "timeout" in type(err).__name__.lower():
        return f"no answer within {_PROBE_TIMEOUT_S:.0f} s"
    return type(err).__name__


def _unreachable(url: str, err: BaseException) -> ClusterError:
    hint = " (6379 is the GCS port; the Jobs API is the dashboard's, default 8265)"
    return ClusterError(
        f"cannot reach the Ray Jobs API at {url}: {_reason(err)}"
        + (hint if url.endswith(":6379") else "")
    )


def _auth_headers(url: str) -> dict[str, str]:
    """Ask the cluster whether it wants a token; if so, the header with Ray's token."""
    import requests

    try:
        answer = requests.get(f"{url}/api/authentication_mode", timeout=_PROBE_TIMEOUT_S)
    except requests.RequestException as err:
        raise _unreachable(url, err) from None
    if answer.status_code == 404:
        return {}  # a Ray older than token authentication: nothing to send
    try:
        mode = answer.json().get("authentication_mode") if answer.ok else None
    except ValueError:
        mode = None
    if mode is None:
        raise ClusterError(
            f"{url} answered (HTTP {answer.status_code}) but not as a Ray dashboard; "
            "expected the Jobs API of the head node (default port 8265)"
        )
    if mode != "token":
        return {}
    token = _raw_token()
    if token is None:
        raise ClusterError(
            f"the Ray cluster at {url} requires an authentication token and none was "
            f"found; expected it in {_TOKEN_SOURCES} (on the head: ray get-auth-token)"
        )
    return {"authorization": f"Bearer {token}"}


@contextlib.contextmanager
def _without(*names: str) -> Iterator[None]:
    # Ray's client lets RAY_ADDRESS override the address it is given; ours is explicit.
    saved = {name: os.environ.pop(name) for name in names if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def _fail(url: str, err: BaseException, job_id: str | None = None) -> ClusterError:
    """One line for whatever Ray's client raised; the token never in it."""
    import requests
    from ray.exceptions import AuthenticationError

    if isinstance(err, ClusterError):
        return err
    if isinstance(err, AuthenticationError):
        if "Authentication required" in str(err):
            return ClusterError(
                f"the Ray cluster at {url} requires an authentication token and none was "
                f"sent; expected it in {_TOKEN_SOURCES}"
            )
        return ClusterError(
            f"the Ray cluster at {url} rejected the authentication token from "
            f"{_TOKEN_SOURCES}; expected that cluster's token (on the head: ray get-auth-token)"
        )
    if isinstance(err, ConnectionError | requests.RequestException):
        return _unreachable(url, err)
    text = str(err).strip()
    if job_id is not None and ("status code 404" in text or "does not exist" in text):
        return ClusterError(
            f"no job {job_id!r} on the Ray cluster at {url}; "
            f"see: mtlstudy jobs list --address {url}"
        )
    if "Version check returned 404" in text:
        return ClusterError(f"{url} is not a Ray dashboard; expected the Jobs API (port 8265)")
    first = text.splitlines()[0] if text else type(err).__name__
    return ClusterError(_scrub(f"Ray Jobs API at {url}: {first}"))


def _client(url: str) -> JobSubmissionClient:
    from ray.job_submission import JobSubmissionClient

    headers = _auth_headers(url)
    with _without("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
        try:
            return JobSubmissionClient(url, headers=headers)
        except Exception as err:  # every failure becomes one line
            raise _fail(url, err) from None


# --- the upload ------------------------------------------------------------------------


def _project_root() -> Path:
    """The source tree holding ``pyproject.toml`` that this package was imported from."""
    root = Path(__file__).resolve().parent.parent
    if not (root / "pyproject.toml").is_file():
        raise ClusterError(
            f"cannot find the project's source tree (pyproject.toml) at {root}; "
            "submit from a clone installed with 'pip install -e .'"
        )
    return root


def _runtime_excludes() -> list[str]:
    """What the upload leaves out, as Ray's ``excludes`` (gitignore patterns)."""
    return [f"/{name}" for name in _TOP_EXCLUDES] + list(_ANY_EXCLUDES)


def _copy_project(root: Path, into: Path, keep_out: Sequence[Path]) -> None:
    skip = {p.resolve() for p in keep_out}

    def ignore(folder: str, names: list[str]) -> set[str]:
        here = Path(folder)
        out = set()
        for name in names:
            path = here / name
            if here == root and name in _TOP_EXCLUDES:
                out.add(name)
            elif name in _IGNORE_FILES or any(fnmatch.fnmatch(name, p) for p in _ANY_EXCLUDES):
                out.add(name)
            elif path.resolve() in skip or path.is_symlink():
                out.add(name)
            elif path.is_file() and path.stat().st_size > _MAX_FILE_BYTES:
                out.add(name)
        return out

    shutil.copytree(root, into, ignore=ignore)


def _read_spec(spec_path: Path) -> dict[str, Any]:
    if not spec_path.is_file():
        raise ClusterError(f"spec {spec_path} not found; expected a YAML file")
    try:
        data = yaml.safe_load(spec_path.read_text())
    except yaml.YAMLError:
        raise ClusterError(f"{spec_path}: not valid YAML") from None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise ClusterError(f"{spec_path}: expected a mapping with a 'name'")
    return data


def _check_paths(spec_path: Path, data: dict[str, Any], results: str | None) -> str:
    """The absolute results root; a relative data or results path is refused."""
    chosen = results if results is not None else str(data.get("results", "results"))
    if not Path(chosen).is_absolute():
        field = "--results" if results is not None else f"{spec_path}: field 'results'"
        raise ClusterError(
            f"{field}: {chosen!r} is relative, and a submitted study runs in a temporary "
            "folder on the cluster; expected an absolute path on storage every node shares"
        )
    dataset = data.get("dataset") if isinstance(data.get("dataset"), dict) else {}
    roots = [("dataset.root", dataset.get("root"))] + [
        (f"dataset.parts.{i}.root", part.get("root"))
        for i, part in enumerate(dataset.get("parts") or [])
        if isinstance(part, dict)
    ]
    for field, root in roots:
        if isinstance(root, str) and not Path(root).is_absolute():
            raise ClusterError(
                f"{spec_path}: field '{field}': {root!r} is relative, and data is read on "
                "the cluster's nodes; expected an absolute path there"
            )
    return chosen


def _place_spec(spec_path: Path, data: dict[str, Any], root: Path, stage: Path) -> Path:
    """Put the spec (and a search-space file it names) in the staged copy; its path there."""
    spec_path = spec_path.resolve()
    if spec_path.is_relative_to(root) and (stage / spec_path.relative_to(root)).is_file():
        return spec_path.relative_to(root)  # copied with the project, next to its files
    placed = Path(_SUBMITTED) / spec_path.name
    (stage / _SUBMITTED).mkdir(exist_ok=True)
    shutil.copy2(spec_path, stage / placed)
    space = data.get("search_space")
    if isinstance(space, str) and Path(space).suffix and not Path(space).is_absolute():
        source = (spec_path.parent / space).resolve()
        if not source.is_relative_to(spec_path.parent) or not source.is_file():
            raise ClusterError(
                f"{spec_path}: field 'search_space': {space!r} is not a file beside the spec; "
                "expected a path under the spec's folder, a built-in space, or an absolute path"
            )
        target = stage / _SUBMITTED / source.relative_to(spec_path.parent)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    return placed


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
        _copy_project(root, stage, keep_out=[Path(chosen)])
        placed = _place_spec(spec_path, data, root, stage)
        command = ["python", "-m", "study.cli", "run", placed.as_posix(), "--address", "auto"]
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
