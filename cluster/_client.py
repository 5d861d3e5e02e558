"""The cluster's Jobs API: its address, its token (Ray's own sources, never shown) and
one-line errors that name the address."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, ParamSpec, TypeVar
from urllib.parse import urlsplit

from cluster._session import ClusterError

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient


__all__ = ["TOKEN_OVER_HTTP_ENV", "jobs_address"]

#: Set to 1, the token is sent to a cluster over plain http too (``--token-over-http``).
TOKEN_OVER_HTTP_ENV = "MTLSTUDY_TOKEN_OVER_HTTP"

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


def _check_channel(url: str) -> None:
    """The token goes over https, to this machine, or where the user said plain http is
    fine: over http to another machine, anyone on the way can read it and use the cluster.
    """
    parts = urlsplit(url)
    if parts.scheme == "https" or os.environ.get(TOKEN_OVER_HTTP_ENV) == "1":
        return
    host = parts.hostname or ""
    if host == "localhost" or host.startswith("127.") or host == "::1":
        return
    raise ClusterError(
        f"the Ray cluster at {url} wants its token, which would cross the network "
        "unencrypted over http; use https:// (a TLS proxy before the dashboard), or pass "
        f"--token-over-http (or set {TOKEN_OVER_HTTP_ENV}=1) on a network you trust"
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
    _check_channel(url)
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
