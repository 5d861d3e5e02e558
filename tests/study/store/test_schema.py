"""One schema per study: derived from the spec and search space, written once, and every
trial file of the study conformed to it; stores of the older layout stay readable."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from study.spec import load_spec
from study.store import (
    HISTORY_SCHEMA,
    SCHEMA_VERSION,
    load_history,
    load_trials,
    read_schema,
    read_trial_row,
    trial_schema,
    write_history,
    write_schema,
    write_trial,
)

SPEC = """
name: s
dataset: {image_size: 32, train_samples: 8, val_samples: 4}
tasks: [semseg, depth]
methods: [ew, dwa, amtl]
baseline_model: {head_channels: 16}
"""


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> pa.Schema:
    path = tmp_path_factory.mktemp("spec") / "spec.yaml"
    path.write_text(SPEC)
    spec, space = load_spec(path)
    return trial_schema(spec, space)


def _dwa_row(trial_id: str) -> dict:
    return {
        "trial_id": trial_id,
        "status": "completed",
        "method": "dwa",
        "tasks": ["semseg", "depth"],
        "hp": {
            "optim": {"lr": 1e-3, "weight_decay": 1e-4},
            "method": "dwa",
            "dwa": {"temperature": 2},
        },
        "final": {"semseg": {"miou": 0.5}},
        "task_params_trainable": {"semseg": 1200.0, "depth": 900},  # a float count, too
        "labels": {"semseg": 8, "depth": 8},
        "params": 5000,
        "delta_m": 1.5,
    }


def test_the_schema_covers_every_method_task_and_count(schema: pa.Schema) -> None:
    types = dict(zip(schema.names, schema.types, strict=True))
    assert schema.names[:2] == ["trial_id", "status"]
    assert schema.names[-2:] == ["study", "schema_version"]
    # Every method's knobs from the space, typed by it; a categorical of ints is an int.
    assert types["hp.dwa.temperature"] == pa.float64()
    assert types["hp.amtl.margin"] == pa.float64() and types["hp.amtl.gamma"] == pa.float64()
    assert types["hp.model.head_channels"] == pa.int64()
    assert types["hp.method"] == pa.string() and types["hp.optim.lr"] == pa.float64()
    # Each task's metrics, from the task records.
    assert types["final.semseg.miou"] == pa.float64() and types["best.depth.rmse"] == pa.float64()
    # Counts are integers everywhere.
    for name in ("labels.semseg", "task_params_trainable.depth", "task_params_stored.semseg"):
        assert types[name] == pa.int64(), name
    assert types["params"] == pa.int64() and types["epochs"] == pa.int64()
    assert types["trained_with.depth"] == pa.list_(pa.string())
    assert not any(pa.types.is_null(t) for t in schema.types)
    assert not any(n.startswith("compute.") for n in schema.names)  # not a staged study
    assert len(set(schema.names)) == len(schema.names)


def test_every_trial_file_of_a_study_has_the_same_schema(tmp_path: Path, schema: pa.Schema) -> None:
    write_schema(tmp_path, "s", schema)
    assert read_schema(tmp_path / "s") == schema
    write_trial(tmp_path, "s", _dwa_row("a"))
    write_trial(
        tmp_path,
        "s",
        {
            "trial_id": "b",
            "status": "error",
            "error": "boom",
            "method": "amtl",
            "hp": {"method": "amtl", "amtl": {"margin": 0.1, "gamma": 2.0}},
        },
    )
    schemas = [
        pq.read_schema(p).remove_metadata() for p in sorted((tmp_path / "s" / "trials").iterdir())
    ]
    assert schemas == [schema, schema]
    frame = load_trials(tmp_path / "s")
    by_id = frame.set_index("trial_id")
    assert by_id.loc["a", "task_params_trainable.semseg"] == 1200
    assert by_id.loc["a", "hp.dwa.temperature"] == 2.0
    assert by_id.loc["b", "hp.dwa.temperature"] != by_id.loc["b", "hp.dwa.temperature"]  # NaN
    assert (frame["schema_version"] == SCHEMA_VERSION).all()
    # A rewrite (as the Pareto flag does) keeps the schema.
    write_trial(tmp_path, "s", {**read_trial_row(tmp_path, "s", "a"), "pareto": True})
    assert pq.read_schema(tmp_path / "s" / "trials" / "a.parquet").remove_metadata() == schema


def test_a_column_outside_the_schema_is_a_clear_error(tmp_path: Path, schema: pa.Schema) -> None:
    write_schema(tmp_path, "s", schema)
    with pytest.raises(ValueError, match=r"\['hp.nope.x'\] are not in the study's schema"):
        write_trial(tmp_path, "s", {**_dwa_row("a"), "hp": {"nope": {"x": 1.0}}})
    with pytest.raises(ValueError, match="'params': 'many' is not a int64"):
        write_trial(tmp_path, "s", {**_dwa_row("a"), "params": "many"})
    write_trial(tmp_path, "s", {**_dwa_row("a"), "hp": {"nope": {"x": None}}})  # null: nothing lost


def test_history_files_share_one_schema(tmp_path: Path) -> None:
    write_history(
        tmp_path,
        "s",
        "a",
        [{"epoch": 1, "split": "val", "task": "all", "metric": "loss", "value": 1}],
    )
    write_history(tmp_path, "s", "b", [])
    for path in (tmp_path / "s" / "history").iterdir():
        assert pq.read_schema(path).remove_metadata() == HISTORY_SCHEMA
    assert load_history(tmp_path)["value"].tolist() == [1.0]


def _old_layout(root: Path) -> None:
    """A study as schema version 1 wrote it: each file with its own columns, a null column
    typed null, a parameter count as a float."""
    folder = root / "old" / "trials"
    folder.mkdir(parents=True)
    common = {"status": ["completed"], "study": ["old"], "schema_version": [1]}
    pq.write_table(
        pa.table(
            {
                "trial_id": ["o1"],
                **common,
                "method": ["dwa"],
                "hp.dwa.temperature": [2.0],
                "task_params_trainable.semseg": [1200.0],
                "error": pa.nulls(1),
            }
        ),
        folder / "o1.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "trial_id": ["o2"],
                **common,
                "method": ["amtl"],
                "hp.amtl.margin": [0.1],
                "task_params_trainable.semseg": [900.0],
            }
        ),
        folder / "o2.parquet",
    )


def test_an_old_layout_store_reads_and_reads_beside_a_new_one(
    tmp_path: Path, schema: pa.Schema
) -> None:
    _old_layout(tmp_path)
    old = load_trials(tmp_path / "old").set_index("trial_id")
    assert old.loc["o1", "hp.dwa.temperature"] == 2.0 and old.loc["o2", "hp.amtl.margin"] == 0.1
    assert old.loc["o2", "task_params_trainable.semseg"] == 900
    write_schema(tmp_path, "new", schema)
    write_trial(tmp_path, "new", _dwa_row("n1"))
    both = load_trials(
        tmp_path, columns=["trial_id", "schema_version", "task_params_trainable.semseg"]
    )
    assert sorted(both["trial_id"]) == ["n1", "o1", "o2"]
    assert sorted(both["schema_version"]) == [1, 1, SCHEMA_VERSION]
    assert sorted(both["task_params_trainable.semseg"]) == [900, 1200, 1200]
