"""The terminal's view of a running phase: trials done, running and failed of the total,
the best objective so far, the time spent and an estimate of the time left."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, Literal

from ray.tune import Callback
from ray.tune.experiment import Trial

__all__ = ["ProgressLine", "format_duration"]


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class ProgressLine(Callback):
    """Writes one line per change through ``write``; a phase's last line is its summary.

    The time left is estimated from trial-epochs: the budget is ``trials × epochs``, a
    trial that ended early gives back the epochs it did not run, and the rate is that of
    the epochs done so far.
    """

    def __init__(
        self,
        phase: str,
        trials: int,
        epochs: int,
        metric: str,
        mode: Literal["min", "max"],
        write: Callable[[str], None],
        min_interval_s: float = 5.0,
    ) -> None:
        self.phase = phase
        self.trials = trials
        self.epochs = epochs
        self.metric = metric
        self.mode = mode
        self.write = write
        self.min_interval_s = min_interval_s
        self._started = time.monotonic()
        self._last_write = -math.inf
        self._epochs: dict[str, int] = {}
        self._ended: dict[str, str] = {}  # trial id -> completed | failed
        self._best: float | None = None

    # -- Tune's events --------------------------------------------------------------------
    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any
    ) -> None:
        self._epochs[trial.trial_id] = int(result.get("epoch", 0))
        value = result.get(self.metric)
        if isinstance(value, int | float) and math.isfinite(value):
            better = max if self.mode == "max" else min
            self._best = value if self._best is None else better(self._best, value)
        self._show(trials, force=False)

    def on_trial_complete(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        self._ended[trial.trial_id] = "completed"
        self._show(trials, force=True)

    def on_trial_error(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        self._ended[trial.trial_id] = "failed"
        self._show(trials, force=True)

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        self._show(trials, force=True)

    # -- the line -------------------------------------------------------------------------
    def line(self, running: int) -> str:
        done = sum(1 for state in self._ended.values() if state == "completed")
        failed = len(self._ended) - done
        elapsed = time.monotonic() - self._started
        parts = [f"[{self.phase}] {done}/{self.trials} done, {running} running, {failed} failed"]
        if self._best is not None:
            name = "Δm" if self.metric == "delta_m" else self.metric
            unit = " %" if self.metric == "delta_m" else ""
            parts.append(
                f"best {name} {self._best:+.2f}{unit}" if unit else f"best {name} {self._best:.4g}"
            )
        parts.append(f"{format_duration(elapsed)} elapsed")
        left = self._time_left(elapsed)
        if left is not None:
            parts.append(f"~{format_duration(left)} left")
        return " · ".join(parts)

    def _time_left(self, elapsed: float) -> float | None:
        budget = self.trials * self.epochs
        # An ended trial's unrun epochs are no longer owed.
        spent = sum(
            self.epochs if trial in self._ended else epochs
            for trial, epochs in self._epochs.items()
        ) + sum(self.epochs for trial in self._ended if trial not in self._epochs)
        if spent == 0:
            return None
        return elapsed / spent * max(0, budget - spent)

    def _show(self, trials: list[Trial], force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._last_write < self.min_interval_s:
            return
        self._last_write = now
        # A trial that just ended may still read RUNNING while its callbacks run.
        running = sum(
            1 for t in trials if t.status == Trial.RUNNING and t.trial_id not in self._ended
        )
        self.write(self.line(running))
