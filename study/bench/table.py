"""A tabular search benchmark: one grid of the search bench's space trained once, every
configuration for the full epoch budget, each epoch's validation Δm and task metrics kept.

Searches then replay against the table (``study.bench.replay``) in seconds instead of
training each trial, the way NAS-Bench-201 and LCBench are used.

The setting, chosen so the grid trains in under an hour of one core: synthetic scenes at
32 px, 64 training and 16 validation images, batches of 32 (two steps an epoch), tasks
semseg, depth and normals, ``hard_sharing`` on timm's ``test_efficientnet`` encoder (120 k
parameters) with 32-channel heads, Adam, 12 epochs. The single-task references (Δm's
denominators) are trained once first, each for the same 12 epochs at the space's defaults.

The grid: the search bench's methods (``ew``, ``rlw``, ``dwa``, ``gls``, ``uw``, ``famo``,
``dtp``) × 5 learning rates × 4 weight decays × the method's own knobs (3 values each; 2 × 2
for ``famo``'s two), every range spread evenly (on its log scale where the space has one)
from its low to its high end: 320 configurations, 3 seeds each (the seed draws the model's
initialisation, the batch order and the balancer's draws; the data is the same).

The table is tidy, one row per (configuration, seed, epoch), with the references and the
setting in the Parquet file's metadata. Training appends each finished configuration to a
``.jsonl`` log beside the table and rewrites the table, so a killed run loses at most one
configuration and the same command goes on where it stopped (from the table alone where
the log is gone: the shipped table comes without it). Configurations train in a
fixed shuffled order, so a partial table is a uniform sample of the grid.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import itertools
import json
import math
import multiprocessing
import os
import platform
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from search_spaces import SearchSpace, load_space

__all__ = [
    "EPOCHS",
    "METHODS",
    "SEEDS",
    "TABLE_PATH",
    "TASKS",
    "Setting",
    "grid",
    "grid_values",
    "read_table",
    "table_space",
    "train_table",
    "write_table",
]

#: The search bench's methods: loss-level and KPI methods, one backward a step.
METHODS = ("ew", "rlw", "dwa", "gls", "uw", "famo", "dtp")
TASKS = ("semseg", "depth", "normals")
EPOCHS = 12
SEEDS = 3
#: The table shipped with the package.
TABLE_PATH = Path(__file__).parent / "data" / "search_table.parquet"
#: Values per range: the optimiser's, and a method's (``famo`` has two knobs, 2 each).
_OPTIM_VALUES = {"lr": 5, "weight_decay": 4}
_KNOB_VALUES = {1: 3, 2: 2}
_METADATA_KEY = b"mtlstudy.table"


@dataclass(frozen=True)
class Setting:
    """What every configuration of the table trains on."""

    image_size: int = 32
    train_samples: int = 64
    val_samples: int = 16
    batch_size: int = 32
    backbone: str = "test_efficientnet"
    head_channels: int = 32
    epochs: int = EPOCHS
    seeds: int = SEEDS
    tasks: tuple[str, ...] = TASKS

    def spec(self) -> Any:
        from study.spec import DatasetSpec, StudySpec

        return StudySpec(
            name="bench-table",
            dataset=DatasetSpec(
                image_size=self.image_size,
                train_samples=self.train_samples,
                val_samples=self.val_samples,
            ),
            tasks=list(self.tasks),
            model={"backbone": self.backbone, "head_channels": self.head_channels},
            epochs=self.epochs,
            batch_size=self.batch_size,
        )


def table_space(methods: Sequence[str] = METHODS) -> SearchSpace:
    """The default space restricted to ``methods``, its head width fixed (the table's)."""
    return load_space("default").restricted_to(list(methods)).model_copy(update={"model": {}})


def grid_values(param: Any, count: int) -> list[Any]:
    """``count`` values of a space's parameter spread evenly from its range's low to its
    high end (on its log scale where it has one); a categorical's choices."""
    if param.type == "categorical":
        return list(param.choices)
    if count == 1:
        return [param.default]
    low, high = (
        (math.log(param.low), math.log(param.high)) if param.log else (param.low, param.high)
    )
    points = [low + (high - low) * i / (count - 1) for i in range(count)]
    values = [math.exp(p) if param.log else p for p in points]
    if param.type == "int":
        return sorted({round(v) for v in values})
    return [float(f"{v:.4g}") for v in values]


def grid(space: SearchSpace) -> list[dict[str, Any]]:
    """Every configuration of the grid, flat (define-by-run names: ``optim/lr``,
    ``method``, ``dwa/temperature``), in the space's order."""
    optim = {
        f"optim/{name}": grid_values(param, _OPTIM_VALUES.get(name, 1))
        for name, param in space.optim.items()
    }
    configs = []
    for method, params in space.methods.items():
        knobs = {
            f"{method}/{name}": grid_values(param, _KNOB_VALUES.get(len(params), 2))
            for name, param in params.items()
        }
        axes = {**optim, **knobs}
        for values in itertools.product(*axes.values()):
            configs.append({"method": method, **dict(zip(axes, values, strict=True))})
    return configs


def nested(flat: Mapping[str, Any]) -> dict[str, Any]:
    """A flat configuration as a trial takes it (``{"optim": {"lr": …}, "dwa": {…}}``)."""
    method = flat["method"]
    config: dict[str, Any] = {"method": method, "optim": {}, method: {}}
    for key, value in flat.items():
        if "/" in key:
            group, name = key.split("/", 1)
            config.setdefault(group, {})[name] = value
    return config


def _metrics(report: Mapping[str, Any], tasks: Sequence[str]) -> dict[str, float]:
    return {
        key: float(value)
        for key, value in report.items()
        if key.split("/")[0] in tasks
        and isinstance(value, (int, float))
        and not key.startswith(("train_loss/", "val_loss/", "weight/", "labels/"))
    }


def _train(setup: Any, config: Mapping[str, Any], epochs: int) -> Iterator[dict[str, Any]]:
    from study.run import TrialRunner

    runner = TrialRunner(setup, config)
    for _ in range(epochs):
        yield runner.run_epoch()


def _references(setting: Setting, log: Callable[[str], None]) -> dict[str, dict[str, float]]:
    """Each task trained alone for the full epochs at the space's defaults (``ew``); its
    last epoch's non-zero metrics are Δm's references."""
    from models import get_task
    from study.run import TrialSetup

    spec = setting.spec()
    setup = TrialSetup(spec=spec, tasks=tuple(spec.tasks), kind="single_task")
    defaults = load_space("default").default_config("ew")
    references = {}
    for task in setting.tasks:
        *_, last = _train(setup, {**defaults, "model": {}, "task": task}, setting.epochs)
        record = get_task(task, spec.dataset.num_classes)
        values = {m.name: float(last.get(f"{task}/{m.name}", math.nan)) for m in record.metrics}
        references[task] = {m: v for m, v in values.items() if math.isfinite(v) and v != 0}
        log(f"reference {task}: {references[task]}")
    return references


def _key(flat: Mapping[str, Any]) -> str:
    return json.dumps(dict(flat), sort_keys=True)


def write_table(out: Path, records: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    """The rows as ``out`` (whole or not at all), ``meta`` in its Parquet metadata."""
    frame = pd.DataFrame.from_records(records)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), _METADATA_KEY: json.dumps(meta).encode()}
    )
    hidden = out.with_name(f".{out.name}.tmp")
    pq.write_table(table, hidden, compression="zstd")
    hidden.replace(out)


def read_table(path: Path = TABLE_PATH) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The table's rows and its metadata (setting, references, grid size)."""
    table = pq.read_table(path)
    meta = json.loads((table.schema.metadata or {})[_METADATA_KEY])
    return table.to_pandas(), meta


def train_table(
    out: Path,
    setting: Setting | None = None,
    methods: Sequence[str] = METHODS,
    limit: int | None = None,
    jobs: int = 1,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train the grid (or its first ``limit`` configurations in the shuffled order) into
    ``out``, ``jobs`` configurations at a time, going on from the log beside it; the
    table's metadata."""
    import torch

    setting = setting or Setting()
    # One core a process: the table's setting is far too small to gain from threads.
    torch.set_num_threads(1)
    configs = grid(table_space(methods))
    random.Random(0).shuffle(configs)
    if limit is not None:
        configs = configs[:limit]
    out.parent.mkdir(parents=True, exist_ok=True)
    journal = out.with_name(f"{out.name}.jsonl")
    head: dict[str, Any] | None = None
    done: dict[str, list[dict[str, Any]]] = {}
    if journal.exists():
        lines = [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]
        if lines:
            head, entries = lines[0], lines[1:]
            _check_setting(head, setting, journal)
            done = {_key(e["config"]): e["records"] for e in entries}
    elif out.exists():
        head, done = _from_table(out, configs)
        _check_setting(head, setting, out)
        # The log again, so that a run from here appends to it.
        entries = [{"config": c, "records": done[_key(c)]} for c in configs if _key(c) in done]
        journal.write_text("".join(json.dumps(line) + "\n" for line in [head, *entries]))
    if head is None:
        log(f"references: {len(setting.tasks)} single-task trials × {setting.epochs} epochs")
        head = {"setting": _plain(setting), "references": _references(setting, log)}
        journal.write_text(json.dumps(head) + "\n")
    meta = {
        **head,
        "configurations": len(configs),
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cpus",
        "date": date.today().isoformat(),
    }
    records = [r for config in configs for r in done.get(_key(config), [])]
    todo = [config for config in configs if _key(config) not in done]
    train = functools.partial(_train_config, setting, head["references"])
    with _pool(jobs) as pool:
        for config, rows, seconds in pool(train, todo):
            with journal.open("a") as file:
                file.write(json.dumps({"config": config, "records": rows}) + "\n")
            done[_key(config)] = rows
            records.extend(rows)
            write_table(out, records, {**meta, "trained": len(done)})
            final = [r["delta_m"] for r in rows if r["epoch"] == setting.epochs]
            log(
                f"{len(done)}/{len(configs)} {config}: final Δm "
                f"{sum(final) / len(final):+.1f} %, {seconds:.0f} s"
            )
    meta["trained"] = len(done)
    write_table(out, records, meta)
    return meta


def _check_setting(head: Mapping[str, Any], setting: Setting, source: Path) -> None:
    if head["setting"] != _plain(setting):
        raise ValueError(f"{source}: trained with another setting; remove it first")


def _from_table(
    out: Path, configs: Sequence[Mapping[str, Any]]
) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """A table's head (setting, references) and its rows by configuration: what its log
    held, for a table shipped without it."""
    frame, meta = read_table(out)
    params = sorted({key for config in configs for key in config})
    done: dict[str, list[dict[str, Any]]] = {}
    for row in frame.to_dict("records"):
        row = {k: v for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))}
        done.setdefault(_key({k: row[k] for k in params if k in row}), []).append(row)
    return {"setting": meta["setting"], "references": meta["references"]}, done


def _train_config(
    setting: Setting, references: Mapping[str, Mapping[str, float]], config: dict[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]], float]:
    """One configuration, every seed: its rows and the seconds it took."""
    import torch

    from study.run import TrialSetup

    torch.set_num_threads(1)
    started = time.perf_counter()
    spec = setting.spec()
    setup = TrialSetup(spec=spec, tasks=tuple(spec.tasks), references=references)
    rows = []
    for seed in range(setting.seeds):
        trial = {**nested(config), "repeat": seed}
        for report in _train(setup, trial, setting.epochs):
            rows.append(
                {
                    **config,
                    "seed": seed,
                    "epoch": int(report["epoch"]),
                    "delta_m": float(report.get("delta_m", math.nan)),
                    **_metrics(report, setting.tasks),
                }
            )
    return config, rows, time.perf_counter() - started


@contextlib.contextmanager
def _pool(jobs: int) -> Iterator[Callable[..., Iterator[Any]]]:
    """``map`` in finishing order over ``jobs`` processes (in this one where it is 1)."""
    if jobs == 1:
        yield map
        return
    # Spawned: a forked child would inherit the parent's torch threads and DeepSpeed state.
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context) as executor:

        def run(function: Callable[..., Any], items: Sequence[Any]) -> Iterator[Any]:
            futures = [executor.submit(function, item) for item in items]
            for future in concurrent.futures.as_completed(futures):
                yield future.result()

        yield run


def _plain(setting: Setting) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in vars(setting).items()}
