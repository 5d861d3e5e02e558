"""A Ray session for one command: a local Ray started and stopped here, or a cluster."""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

__all__ = ["ClusterError", "ray_session"]


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
    try:
        if address is None:
            _private_token()
            ray.init(
                num_cpus=num_cpus,
                include_dashboard=False,
                logging_level=logging.WARNING,
                log_to_driver=False,
                runtime_env=runtime_env,
            )
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
