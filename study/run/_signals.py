"""Stopping a study on SIGINT or SIGTERM: the running Tune experiment ends as Tune's own
SIGUSR1 ends it (its state saved, so ``--resume`` goes on from there), and the driver then
raises :class:`StudyInterrupted` instead of starting another phase."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from study.errors import UserError

__all__ = ["StudyInterrupted", "graceful_stop", "raise_if_stopped"]

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received: list[int] = []


class StudyInterrupted(UserError):
    """The driver was asked to stop; finished trials and the search's history are kept."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        #: The shell's convention: 128 + the signal's number (130 for SIGINT).
        self.exit_status = 128 + signum


def _stop(signum: int, frame: FrameType | None) -> None:
    if _received:
        raise KeyboardInterrupt  # a second signal: stop now, without saving
    _received.append(signum)
    # Tune's advice to call Tuner.restore is for its API; the CLI prints its own command.
    logging.getLogger("ray.tune").setLevel(logging.ERROR)
    os.kill(os.getpid(), signal.SIGUSR1)


def raise_if_stopped() -> None:
    """Raise :class:`StudyInterrupted` once a stop signal has arrived."""
    if _received:
        raise StudyInterrupted(_received[0])


@contextmanager
def graceful_stop() -> Iterator[None]:
    """While inside (in the main thread), SIGINT and SIGTERM stop the study gracefully."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received.clear()
    # Tune handles SIGUSR1 while an experiment runs; between experiments it does nothing.
    previous = {s: signal.signal(s, _stop) for s in _STOP_SIGNALS}
    previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, lambda *_: None)
    flag = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    try:
        yield
        raise_if_stopped()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if flag is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = flag
