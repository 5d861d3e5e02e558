"""Tune's experiment state signed by the driver as Tune writes it, and checked before a
resume lets ``Tuner.restore`` unpickle any of it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray import tune

from study import store

__all__ = ["SignTuneState", "checked_tune_state"]


class SignTuneState(tune.Callback):
    """Signs the experiment folder's files after each step of Tune's loop (right after Tune
    saves its state) and when the experiment ends.

    Pickled into the experiment with the run's settings: it holds no key, only where the
    study is, and finds the folder under the root a resuming driver bound.
    """

    def __init__(self, study: str, phase: str, folder: Path) -> None:
        self.study = study
        self.phase = phase
        self.folder = folder
        self._seen: dict[str, tuple[int, int]] = {}
        self._key: bytes | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"study": self.study, "phase": self.phase, "folder": self.folder}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._seen, self._key = {}, None
        bound = store.driver_store(self.study)
        if bound is not None:
            self.folder = bound.root / self.study / "tune" / self.phase

    def sign(self) -> None:
        if self._key is None:
            self._key = store.study_key(self.study)
        store.sign_state(self.folder, self._key, self._seen)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self.sign()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.sign()


def checked_tune_state(folder: Path, study: str) -> list[str]:
    """Verify a phase's experiment folder before Tune reads it (see
    :func:`study.store.verify_state`); the names put back to their signed copies."""
    return store.verify_state(folder, store.study_key(study))
