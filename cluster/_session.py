"""A Ray session for one command: a local Ray started and stopped here (on 127.0.0.1 only,
and never outliving the command), or a cluster."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from cluster._watchdog import MARKER_ENV, start_watchdog

__all__ = ["ClusterError", "ray_session"]


#: Where every port of a local Ray listens: reachable from this machine only.
LOCALHOST = "127.0.0.1"


class ClusterError(ConnectionError):
    """The Ray cluster cannot be reached or used; the message is one line."""


def _check_reachable(address: str, timeout_s: float = 3.0) -> None:
    """Fail fast on a dead ``host:port``; ``ray.init`` would retry for minutes."""
    if address == "auto" or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ClusterError(f"cluster address {address!r} is not host:port (e.g. 10.0.0.5:6379)")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise ClusterError(f"cannot reach the Ray cluster at {address}: {reason}") from None


def _private_token() -> None:
    """The token a new local Ray authenticates with, in a file only its owner can read (Ray
    would write ``~/.ray/auth_token`` readable by everyone). A user who set Ray's own
    variables keeps their choice."""
    if any(os.environ.get(v) for v in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")):
        return
    path = Path.home() / ".ray" / "auth_token"
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_uid == os.getuid():
            path.chmod(0o600)
    else:
        with os.fdopen(fd, "w") as file:
            file.write(secrets.token_hex(32))  # Ray's own format: 256 bits as hex
    # Token authentication is what a local Ray does by default; its warning says so on
    # every run.
    logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)


@contextmanager
def _loopback_only() -> Iterator[None]:
    """A local Ray whose every port (GCS, raylet, object manager, workers, agents, metrics)
    listens on 127.0.0.1 only. Ray turns a loopback ``_node_ip_address`` into this
    machine's outward address unless it takes the machine for a single-node one, so it is
    told so: in this process, and in the processes it starts."""
    from ray._private import ray_constants

    saved_env = os.environ.get(ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR)
    saved = ray_constants.ENABLE_RAY_CLUSTER
    os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved
        if saved_env is None:
            os.environ.pop(ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR, None)
        else:
            os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = saved_env


def _start_local(num_cpus: int | None, runtime_env: dict | None) -> subprocess.Popen | None:
    """Start a local Ray on 127.0.0.1, watched so that it ends with this process; the
    watchdog (None where it cannot run) is returned for :func:`_stop_local`."""
    import ray

    _private_token()
    watchdog = start_watchdog()
    try:
        with _loopback_only():
            ray.init(
                num_cpus=num_cpus,
                include_dashboard=False,
                dashboard_host=LOCALHOST,
                _node_ip_address=LOCALHOST,
                logging_level=logging.WARNING,
                log_to_driver=False,
                runtime_env=runtime_env,
            )
    except BaseException:
        _stop_local(watchdog)
        raise
    finally:
        os.environ.pop(MARKER_ENV, None)  # what this process starts later is not Ray's
    return watchdog


def _stop_local(watchdog: subprocess.Popen | None) -> None:
    """Stop what Ray's shutdown left (agents, idle workers) through the watchdog."""
    if watchdog is None:
        return
    with contextlib.suppress(OSError):
        watchdog.stdin.close()
    with contextlib.suppress(subprocess.TimeoutExpired):
        watchdog.wait(timeout=15)


@contextmanager
def _keep_signal_handlers() -> Iterator[None]:
    """The driver's SIGINT and SIGTERM handlers as they were before ``ray.init``: Ray's core
    worker installs a native SIGTERM handler that dumps a stack trace and exits, in front of
    a study's graceful stop."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in before.items():
            if handler is not None:  # None: set outside Python, nothing to put back
                signal.signal(signum, handler)


@contextmanager
def ray_session(
    address: str | None = None,
    num_cpus: int | None = None,
    env_vars: Mapping[str, str] | None = None,
) -> Iterator[None]:
    """Connect to ``address``, or start a local Ray when it is None; shut down at the end."""
    import ray

    runtime_env = {"env_vars": dict(env_vars)} if env_vars else None
    if address is not None:
        _check_reachable(address)
    watchdog = None
    try:
        with _keep_signal_handlers():
            if address is None:
                watchdog = _start_local(num_cpus, runtime_env)
            else:
                ray.init(address=address, logging_level=logging.WARNING, runtime_env=runtime_env)
    except (ConnectionError, RuntimeError, ValueError) as err:
        where = address or "a new local Ray"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ClusterError(f"cannot start or reach Ray at {where}: {first}") from None
    try:
        yield
    finally:
        ray.shutdown()
        _stop_local(watchdog)
