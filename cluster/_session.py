"""A Ray session for one command: a local Ray started and stopped here, or a cluster."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

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
