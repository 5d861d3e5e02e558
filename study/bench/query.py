"""Query time of the Parquet store: a synthetic store, then filtered aggregates through
:func:`study.store.load`.

The synthetic store has the store's layout and columns (see docs/RESULTS.md): studies of one
architecture each, twenty balancing methods, the statuses the recorder writes, per-task
final and best metrics, method-specific hyperparameters (so files differ in columns) and
an int column that is a float in one study (so types differ). A real store holds one file
per trial; writing 100,000 tiny files would measure the file system more than the reader,
so trials are grouped, one method of one study per file. The queries are timed on the
store as written, then again after :func:`study.store.compact` merged each study's files.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from study.store import compact, load_history, load_trials

__all__ = ["format_table", "measure_query", "write_synthetic_store"]

_SCHEMA_VERSION = 1  # the store's (study.store.SCHEMA_VERSION) when this bench was written
_ARCHITECTURES = ("hard_sharing", "rcm_resnet", "vmm")
_DATASETS = ("nyud", "pascal")
_METHODS: dict[str, dict[str, tuple[float, float]]] = {
    # method: its own hyperparameters (low, high), as in search_spaces/default.yaml
    "ew": {},
    "rlw": {},
    "dwa": {"temperature": (1.0, 4.0)},
    "gls": {},
    "uw": {"lr": (1e-3, 1e-1)},
    "famo": {"lr": (1e-3, 1e-1), "gamma": (1e-4, 1e-2)},
    "dtp": {"gamma": (0.1, 4.0)},
    "amtl": {"margin": (0.0, 0.2), "gamma": (0.5, 4.0)},
    "amtl_sum": {"margin": (0.0, 0.2), "gamma": (0.5, 4.0)},
    "mgda": {},
    "pcgrad": {},
    "cagrad": {"c": (0.1, 0.9)},
    "imtl_g": {},
    "imtl": {"lr": (1e-3, 1e-1)},
    "gradnorm": {"alpha": (0.5, 3.0), "lr": (1e-3, 1e-1)},
    "nash_mtl": {},
    "aligned_mtl": {},
    "db_mtl": {"beta": (0.5, 0.99)},
    "upgrad": {},
    "pcgrad_amtl": {"margin": (0.0, 0.2), "gamma": (0.5, 4.0)},
}
_TASKS: dict[str, tuple[str, ...]] = {
    "semseg": ("miou", "pixel_acc"),
    "depth": ("rmse", "abs_rel"),
    "normals": ("mean_angle",),
    "edges": ("odsf",),
}
# Statuses as study.run writes them, with their share of trials.
_STATUSES = {"completed": 0.80, "stopped_early": 0.12, "error": 0.05, "running": 0.03}
_VERSIONS = {"mtlstudy": "0.1.0", "torch": "2.14.1", "deepspeed": "0.19.8", "ray": "2.60.0"}

# One epoch of history rows (split, task, metric); the headline metric comes first so a
# short history still has it.
_EPOCH_ROWS: list[tuple[str, str, str]] = [
    ("val", "semseg", "miou"),
    ("val", "all", "loss"),
    ("val", "all", "delta_m"),
    *[(s, t, m) for t in _TASKS for s, m in (("train", "loss"), ("train", "weight"))],
    *[("val", t, "loss") for t in _TASKS],
    *[("val", t, m) for t, ms in _TASKS.items() for m in ms if (t, m) != ("semseg", "miou")],
]

#: The two aggregates the bench times, as a user would write them.
TRIALS_WHERE = "status == 'completed'"
HISTORY_WHERE = "split == 'val' and task == 'semseg' and metric == 'miou'"


def _trials_table(
    rng: np.random.Generator, study: str, arch: str, dataset: str, method: str, first: int, n: int
) -> pa.Table:
    ids = [f"{study}_{first + i:07d}" for i in range(n)]
    status = rng.choice(list(_STATUSES), size=n, p=list(_STATUSES.values()))
    failed = status == "error"
    ok = ~failed

    def metric(low: float, high: float) -> pa.Array:
        return pa.array(rng.uniform(low, high, n), mask=failed)

    columns: dict[str, Any] = {
        "trial_id": pa.array(ids),
        "status": pa.array(status),
        "error": pa.array(np.where(failed, "RuntimeError: CUDA out of memory", None)),
        "kind": pa.array(["multi_task"] * n),
        "architecture": pa.array([arch] * n),
        "method": pa.array([method] * n),
        "dataset": pa.array([dataset] * n),
        "dataset_key": pa.array([f"{dataset}-64"] * n),
        "tasks": pa.array([list(_TASKS)] * n, type=pa.list_(pa.string())),
        "seed": pa.array(rng.integers(0, 4, n)),
        "hp.method": pa.array([method] * n),
        "hp.optim.lr": pa.array(np.exp(rng.uniform(math.log(3e-4), math.log(1e-2), n))),
        "hp.optim.weight_decay": pa.array(np.exp(rng.uniform(math.log(1e-6), math.log(1e-2), n))),
        # An int column that an older study wrote as float: the reader widens it.
        "hp.model.head_channels": pa.array(
            rng.choice([16, 32], n).astype(np.float64 if study.endswith("_0") else np.int64)
        ),
    }
    for knob, (low, high) in _METHODS[method].items():
        columns[f"hp.{method}.{knob}"] = pa.array(rng.uniform(low, high, n))
    columns["epochs"] = pa.array(np.where(ok, rng.integers(2, 11, n), 0))
    for name, version in _VERSIONS.items():
        columns[f"versions.{name}"] = pa.array([version] * n)
    for prefix in ("final", "best"):
        for task, metrics in _TASKS.items():
            for name in metrics:
                columns[f"{prefix}.{task}.{name}"] = metric(0.0, 1.0)
    columns |= {
        "gflops": metric(1.0, 20.0),
        "gflops_ratio": metric(0.3, 1.0),
        "gflops_single_task_sum": metric(4.0, 80.0),
        "params": pa.array(rng.integers(1_000_000, 30_000_000, n), mask=failed),
        "wall_time_s": metric(30.0, 3_000.0),
        "node": pa.array(rng.choice([f"node-{i}" for i in range(8)], n)),
        "delta_m": metric(-8.0, 3.0),  # percent, as study.metrics.delta_m
    }
    for task in _TASKS:
        columns[f"baseline_trials.{task}"] = pa.array([f"{study}_single_{task}"] * n)
    columns["best_delta_m"] = pc.add(columns["delta_m"], metric(0.0, 1.0))
    columns["study"] = pa.array([study] * n)
    columns["schema_version"] = pa.array([_SCHEMA_VERSION] * n)
    return pa.table(columns)


def _history_table(
    rng: np.random.Generator, study: str, ids: pa.Array, rows_per_trial: int
) -> pa.Table:
    n = len(ids) * rows_per_trial
    split, task, metric = (pa.array(list(c)) for c in zip(*_EPOCH_ROWS, strict=True))
    slot = np.tile(np.arange(rows_per_trial), len(ids))
    row = pa.array(slot % len(_EPOCH_ROWS))
    return pa.table(
        {
            "trial_id": ids.take(pa.array(np.repeat(np.arange(len(ids)), rows_per_trial))),
            "epoch": pa.array(1 + slot // len(_EPOCH_ROWS)),
            "split": split.take(row),
            "task": task.take(row),
            "metric": metric.take(row),
            "value": pa.array(rng.random(n)),
            "study": pa.array([study] * n),
            "schema_version": pa.array(np.full(n, _SCHEMA_VERSION)),
        }
    )


def write_synthetic_store(
    folder: Path, trials: int, history: int, files: int, seed: int = 0
) -> dict[str, int]:
    """Write ``trials`` trial rows and ``history`` history rows (a multiple of ``trials``,
    rounded down) under ``folder`` in ``files`` trial files and as many history files."""
    if trials < 1 or files < 1 or history < trials:
        raise ValueError("expected trials >= 1, files >= 1 and history >= trials")
    rng = np.random.default_rng(seed)
    files = min(files, trials)
    studies = [
        (f"{d}_{a}_{i}", a, d)
        for i, (a, d) in enumerate((a, d) for d in _DATASETS for a in _ARCHITECTURES)
    ][: min(files, 2 * len(_ARCHITECTURES))]
    rows_per_trial = history // trials
    methods = list(_METHODS)
    rows = {"trials": 0, "history": 0}
    for index, chunk in enumerate(np.array_split(np.arange(trials), files)):
        study, arch, dataset = studies[index % len(studies)]
        method = methods[(index // len(studies)) % len(methods)]
        table = _trials_table(rng, study, arch, dataset, method, int(chunk[0]), len(chunk))
        ids = table["trial_id"].combine_chunks()
        for kind, data in (
            ("trials", table),
            ("history", _history_table(rng, study, ids, rows_per_trial)),
        ):
            path = folder / study / kind / f"part-{index:05d}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(data, path)
            rows[kind] += data.num_rows
    return {
        "trial_rows": rows["trials"],
        "history_rows": rows["history"],
        "studies": len(studies),
        "files": 2 * files,
        "trials_per_file": math.ceil(trials / files),
        "history_per_file": math.ceil(trials / files) * rows_per_trial,
    }


def best_delta_m(folder: Path) -> pd.DataFrame:
    """Best Δm per method × architecture among completed trials."""
    trials = load_trials(folder, where=TRIALS_WHERE, columns=["method", "architecture", "delta_m"])
    return trials.groupby(["method", "architecture"], observed=True)["delta_m"].max().unstack()


def final_semseg_miou(folder: Path) -> pd.Series:
    """Mean semseg mIoU at each completed trial's last epoch, per method (history ⋈ trials)."""
    rows = load_history(
        folder, where=HISTORY_WHERE, columns=["study", "trial_id", "epoch", "value"]
    )
    last = rows.sort_values("epoch").drop_duplicates(["study", "trial_id"], keep="last")
    trials = load_trials(folder, where=TRIALS_WHERE, columns=["study", "trial_id", "method"])
    joined = last.merge(trials, on=["study", "trial_id"], how="inner")
    return joined.groupby("method", observed=True)["value"].mean()


def all_trials(folder: Path) -> pd.DataFrame:
    """Every column of every trial (a reference: what a filter saves)."""
    return load_trials(folder)


def _time(function: Callable[[Path], Any], folder: Path, rounds: int) -> tuple[dict[str, Any], Any]:
    started = time.perf_counter()
    result = function(folder)
    cold = time.perf_counter() - started
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        function(folder)
        times.append(time.perf_counter() - started)
    return {
        "cold_s": cold,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "rounds": rounds,
        "result_rows": len(result),
    }, result


_QUERIES: dict[str, Callable[[Path], Any]] = {
    "best Δm per method × architecture": best_delta_m,
    "final semseg mIoU per method (history ⋈ trials)": final_semseg_miou,
    "all trials, all columns (reference)": all_trials,
}


def _queries(root: Path, rounds: int) -> tuple[dict[str, Any], dict[str, Any]]:
    queries: dict[str, Any] = {}
    results: dict[str, Any] = {}
    for name, function in _QUERIES.items():
        queries[name], results[name] = _time(function, root, rounds)
    return queries, results


def measure_query(
    trials: int = 100_000,
    history: int = 10_000_000,
    files: int = 600,
    threads: int | None = None,
    folder: Path | None = None,
    rounds: int = 5,
) -> dict[str, Any]:
    """Write a synthetic store (in a temporary folder unless ``folder`` is given; it must
    be empty or absent) and time the aggregates: the first ("cold") call apart, then the
    median of ``rounds`` calls; then compact each study and time them again."""
    if threads is not None:
        pa.set_cpu_count(threads)
        pa.set_io_thread_count(max(threads, 2))
    load_before = os.getloadavg()[0]  # other work on the machine slows every figure
    if folder is not None and Path(folder).exists() and any(Path(folder).iterdir()):
        raise ValueError(f"{folder}: not empty; the bench writes a fresh store there")
    with tempfile.TemporaryDirectory(prefix="mtlstudy-bench-query-") as scratch:
        root = Path(scratch) if folder is None else Path(folder)
        started = time.perf_counter()
        written = write_synthetic_store(root, trials, history, files)
        write_s = time.perf_counter() - started
        size = sum(p.stat().st_size for p in root.rglob("*.parquet"))
        queries, results = _queries(root, rounds)
        started = time.perf_counter()
        for study in sorted(p for p in root.iterdir() if p.is_dir()):
            compact(study)
        compact_s = time.perf_counter() - started
        compacted, _ = _queries(root, rounds)
        files_after = sum(1 for _ in root.rglob("*.parquet"))
    best = results["best Δm per method × architecture"]
    return {
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cpus, "
        f"Arrow {pa.cpu_count()} threads (io {pa.io_thread_count()})",
        "load_average": {"before": load_before, "after": os.getloadavg()[0]},
        "pyarrow": pa.__version__,
        "pandas": pd.__version__,
        "store": {**written, "bytes": size, "write_s": write_s},
        "trials_where": TRIALS_WHERE,
        "history_where": HISTORY_WHERE,
        "queries": queries,
        "compaction": {"seconds": compact_s, "files": files_after, "queries": compacted},
        "best_delta_m_sample": {
            f"{method} × {arch}": round(float(value), 4)
            for (method, arch), value in best.stack().head(3).items()
        },
    }


def _row(name: str, cell: dict[str, Any]) -> str:
    return (
        f"{name:50s}{cell['cold_s']:9.3f}{cell['median_s']:10.3f}{cell['min_s']:8.3f}"
        f"{cell['result_rows']:8d}"
    )


def format_table(figures: dict[str, Any]) -> str:
    """The store, then one row per query: cold, median and best time, and result rows."""
    store, load = figures["store"], figures["load_average"]
    lines = [
        figures["machine"],
        f"pyarrow {figures['pyarrow']}, pandas {figures['pandas']}; load average "
        f"{load['before']:.1f} before, {load['after']:.1f} after",
        f"store: {store['trial_rows']:,} trial rows, {store['history_rows']:,} history rows, "
        f"{store['studies']} studies, {store['files']} files "
        f"(~{store['trials_per_file']} trials / ~{store['history_per_file']:,} history rows "
        f"per file; a real store has one file per trial), "
        f"{store['bytes'] / 2**20:.0f} MiB, written in {store['write_s']:.1f} s",
        f"{'query':50s}{'cold s':>9s}{'median s':>10s}{'min s':>8s}{'rows':>8s}",
    ]
    for name, cell in figures["queries"].items():
        lines.append(_row(name, cell))
    after = figures["compaction"]
    lines.append(
        f"after compaction ({after['seconds']:.1f} s; {after['files']} files in all, one per "
        "study and kind):"
    )
    for name, cell in after["queries"].items():
        lines.append(_row(name, cell))
    lines.append(
        f"filters: trials {figures['trials_where']!r}; history {figures['history_where']!r}"
    )
    lines.append(
        "cold: the first call in this process (reads every footer for the unified schema, "
        "then scans); median/min: later calls, which reuse the cached schema"
    )
    return "\n".join(lines)
