"""A small results store in the recorder's format, for the analysis and command-line tests.

Four studies (2 architectures × 2 seeds, one spec each, as real studies are), tasks
semseg + depth on synthetic data, 3 methods (ew, dwa, amtl) per study, 3 epochs of
history each (``study.run.history_rows``, the recorder's own rows), single-task
baselines per study, plus trials that must not count as results: one stopped early, one
still running, one failed, and a worse second trial of dwa in one study. The first study
has an Optuna journal with 8 completed trials, the third one with 2 (too few).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from models import get_task
from study.run import history_rows
from study.store import write_history, write_trial

ARCHS = ("hard_sharing", "rcm_resnet")
METHODS = ("ew", "dwa", "amtl")
SEEDS = (0, 1)
TASKS = ("semseg", "depth")
EPOCHS = 3
ERROR = "RuntimeError: loss of <depth> & 'normals' is NaN"


def study_name(arch: str, seed: int) -> str:
    return f"{arch}-seed{seed}"


def _metrics(quality: float) -> dict[str, dict[str, float]]:
    return {
        "semseg": {"miou": 0.3 + 0.5 * quality, "pixel_acc": 0.6 + 0.3 * quality},
        "depth": {
            "rmse": 2.0 - 1.2 * quality,
            "abs_rel": 0.6 - 0.3 * quality,
            "log_rmse": 0.9 - 0.4 * quality,
            "delta1": 0.2 + 0.5 * quality,
            "delta2": 0.4 + 0.4 * quality,
            "delta3": 0.5 + 0.4 * quality,
        },
    }


def _hp(rng: np.random.Generator, method: str) -> dict[str, Any]:
    own = {
        "ew": {},
        "dwa": {"temperature": float(rng.uniform(1, 5))},
        "amtl": {"margin": float(rng.uniform(0, 0.2)), "gamma": float(rng.uniform(0.5, 4))},
    }[method]
    hp = {
        "optim": {
            "lr": float(10 ** rng.uniform(-4, -2)),
            "weight_decay": float(10 ** rng.uniform(-6, -2)),
        },
        "model": {"head_channels": int(rng.choice([16, 32]))},
        "method": method,
    }
    return {**hp, method: own} if own else hp


def _epoch_result(epoch: int, quality: float, delta: float, rng: np.random.Generator) -> dict:
    """One epoch's report, as the trial sends it (the keys history_rows reads)."""
    result: dict[str, Any] = {"epoch": epoch, "val_loss": 3.0 - quality, "delta_m": delta}
    for task, metrics in _metrics(quality).items():
        result[f"train_loss/{task}"] = float(1.5 - quality + rng.uniform(0, 0.1))
        result[f"weight/{task}"] = float(rng.uniform(0.2, 1.8))
        result[f"val_loss/{task}"] = float(1.6 - quality)
        result[f"labels/{task}"] = 64
        result |= {f"{task}/{m}": v for m, v in metrics.items()}
    return result


def _write(
    root: Path,
    study: str,
    row: dict[str, Any],
    results: list[dict[str, Any]],
    tasks: tuple[str, ...],
) -> None:
    records = {t: get_task(t) for t in tasks}
    history = [
        {"trial_id": row["trial_id"], **r}
        for result in results
        for r in history_rows(result, records)
    ]
    if history:
        write_history(root, study, row["trial_id"], history)
    write_trial(root, study, row)


def _trial(
    rng: np.random.Generator,
    arch: str,
    seed: int,
    trial_id: str,
    method: str,
    delta: float,
    status: str = "completed",
    epochs: int = EPOCHS,
    baselines: dict[str, str] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    hp = _hp(rng, method)
    quality = float(np.clip(0.5 + delta / 100, 0.05, 0.95))
    results = [
        _epoch_result(e, quality * e / epochs, delta - 5 * (epochs - e), rng)
        for e in range(1, epochs + 1)
    ]
    if method == "amtl":  # AMTL also reports each task's achievement (KPI ÷ potential)
        for result in results:
            result |= {f"achievement/{t}": float(rng.uniform(0.3, 1.1)) for t in TASKS}
    heads = hp["model"]["head_channels"]
    row: dict[str, Any] = {
        "trial_id": trial_id,
        "status": status,
        "error": None,
        "kind": "multi_task",
        "architecture": arch,
        "method": method,
        "dataset": "synthetic",
        "dataset_key": f"synthetic:32px:5c:64+16:4obj:seed{seed}",
        "tasks": list(TASKS),
        "seed": seed,
        "hp": hp,
        "incremental": False,
        "stage": None,
        "trained_with": {t: list(TASKS) for t in TASKS},
        "epochs": epochs,
        "versions": {"mtlstudy": "0.1.0", "optuna": optuna.__version__},
        "final": _metrics(quality),
        "best": _metrics(quality),
        "labels": dict.fromkeys(TASKS, 64),
        "gflops": (0.4 if arch == "hard_sharing" else 1.1) + heads / 160,
        "gflops_ratio": 0.6,
        "gflops_single_task_sum": 1.5,
        "params": (300_000 if arch == "hard_sharing" else 900_000) + 1000 * heads,
        "wall_time_s": 12.5,
        "restored_from_epoch": 0,
        "node": "node-1",
        "delta_m": results[-1]["delta_m"],
        "best_delta_m": max(r["delta_m"] for r in results),
        "baseline_trials": baselines or {},
    }
    return row, results


def build_store(root: Path) -> Path:
    rng = np.random.default_rng(7)
    for arch in ARCHS:
        for seed in SEEDS:
            study = study_name(arch, seed)
            short = f"{arch[:3]}{seed}"
            baselines = {t: f"b-{short}-{t}" for t in TASKS}
            for task, trial_id in baselines.items():
                quality = 0.5
                row = {
                    "trial_id": trial_id,
                    "status": "completed",
                    "error": None,
                    "kind": "single_task",
                    "architecture": arch,
                    "method": "ew",
                    "dataset": "synthetic",
                    "dataset_key": f"synthetic:32px:5c:64+16:4obj:seed{seed}",
                    "tasks": [task],
                    "seed": seed,
                    "hp": {"method": "ew"},
                    "epochs": EPOCHS,
                    "final": {task: _metrics(quality)[task]},
                    "gflops": 0.3,
                    "params": 250_000,
                }
                _write(root, study, row, [], (task,))
            for method in METHODS:
                delta = float(rng.uniform(-20, 20))
                row, results = _trial(
                    rng, arch, seed, f"t-{short}-{method}", method, delta, baselines=baselines
                )
                _write(root, study, row, results, TASKS)
            if arch == "hard_sharing" and seed == 0:
                # A worse second dwa trial: the heatmap takes each seed's best.
                row, results = _trial(rng, arch, seed, "t-har0-dwa-b", "dwa", -40.0)
                _write(root, study, row, results, TASKS)
            if arch == "rcm_resnet" and seed == 1:
                # Would top every result if stopped, running or failed trials counted.
                row, results = _trial(
                    rng, arch, seed, "x-stopped", "amtl", 60.0, "stopped_early", epochs=2
                )
                _write(root, study, row, results, TASKS)
                row, results = _trial(rng, arch, seed, "x-running", "ew", 70.0, "running", 1)
                _write(root, study, row, results, TASKS)
                row, results = _trial(rng, arch, seed, "x-error", "dwa", 80.0, "error", 1)
                failed = {k: row[k] for k in ("trial_id", "kind", "architecture", "method")}
                failed |= {"status": "error", "error": ERROR, "tasks": list(TASKS), "seed": 1}
                failed |= {"dataset_key": row["dataset_key"], "hp": row["hp"], "epochs": 1}
                _write(root, study, failed, results, TASKS)
    write_journal(root / study_name("hard_sharing", 0) / "optuna.journal", 8, seed=1)
    write_journal(root / study_name("rcm_resnet", 0) / "optuna.journal", 2, seed=2)
    return root


_DISTRIBUTIONS = {
    "optim/lr": FloatDistribution(1e-4, 1e-2, log=True),
    "optim/weight_decay": FloatDistribution(1e-6, 1e-2, log=True),
    "model/head_channels": CategoricalDistribution([16, 32]),
    "method": CategoricalDistribution(list(METHODS)),
    "dwa/temperature": FloatDistribution(1, 5),
    "amtl/margin": FloatDistribution(0, 0.2),
    "amtl/gamma": FloatDistribution(0.5, 4),
}


def write_journal(path: Path, trials: int, seed: int) -> None:
    """An Optuna journal with ``trials`` completed trials of the define-by-run names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    storage = JournalStorage(JournalFileBackend(str(path)))
    study = optuna.create_study(storage=storage, study_name="multi_task", direction="maximize")
    rng = np.random.default_rng(seed)
    for i in range(trials):
        method = METHODS[i % len(METHODS)]
        params: dict[str, Any] = {
            "optim/lr": float(10 ** rng.uniform(-4, -2)),
            "optim/weight_decay": float(10 ** rng.uniform(-6, -2)),
            "model/head_channels": int(rng.choice([16, 32])),
            "method": method,
        }
        if method == "dwa":
            params["dwa/temperature"] = float(rng.uniform(1, 5))
        if method == "amtl":
            params["amtl/margin"] = float(rng.uniform(0, 0.2))
            params["amtl/gamma"] = float(rng.uniform(0.5, 4))
        value = 100 * params["optim/lr"] - 5 * (method == "ew") + float(rng.normal(0, 0.1))
        study.add_trial(
            optuna.trial.create_trial(
                params=params,
                distributions={k: _DISTRIBUTIONS[k] for k in params},
                value=value,
            )
        )


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The results root (read only: tests that change a store copy it)."""
    return build_store(tmp_path_factory.mktemp("analysis") / "results")


@pytest.fixture
def journal() -> Callable[[Path, int, int], None]:
    """:func:`write_journal`, for tests that make a journal of their own."""
    return write_journal


@pytest.fixture
def repeat_rows() -> Callable[[str, str, list[float]], list[dict]]:
    """Trial rows of one configuration's repeats: ``(config, method, Δm per seed)``."""

    def rows(config: str, method: str, values: list[float]) -> list[dict]:
        return [
            {
                "trial_id": f"{config}{seed}",
                "config_id": config,
                "kind": "multi_task",
                "status": "completed",
                "method": method,
                "architecture": "hard_sharing",
                "seed": seed,
                "delta_m": value,
            }
            for seed, value in enumerate(values)
        ]

    return rows
