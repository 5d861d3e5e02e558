"""A store written by a real study, read by outside clients with no project code and no
options: DuckDB and Polars over the per-trial files, then over the compacted study."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from study.run import run_study
from study.spec import load_spec
from study.store import compact, load_trials, read_schema

# One short study for the whole module: two methods with knobs of their own (dwa, amtl)
# and one without (ew), so the per-trial files would differ without one schema.

# One real study on a local Ray; the schema and compaction are also tested without Ray.
pytestmark = pytest.mark.slow

SPEC = """
name: outside
seed: 0
dataset: {{image_size: 32, train_samples: 8, val_samples: 4}}
tasks: [semseg, depth]
model: {{backbone: regnetx_002}}
methods: [ew, dwa, amtl]
potentials: {{depth: 0.5}}
warm_start: true
trials: 3
concurrency: 2
epochs: 1
batch_size: 8
scheduler: {{name: fifo}}
compact_on_finish: false
results: {results}
"""

QUERY = "SELECT method, max(delta_m) AS best FROM '{glob}' GROUP BY method ORDER BY method"


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> Path:
    tmp = tmp_path_factory.mktemp("outside")
    spec_path = tmp / "spec.yaml"
    spec_path.write_text(SPEC.format(results=tmp / "results"))
    spec, space = load_spec(spec_path)
    outcome = run_study(spec, space, log=lambda line: None)
    assert outcome.errors == 0
    return outcome.results


def _expected(folder: Path) -> list[tuple[str, float]]:
    trials = load_trials(folder, columns=["method", "delta_m"])
    best = trials.groupby("method")["delta_m"].max()
    return sorted((m, None if v != v else round(float(v), 9)) for m, v in best.items())


def _duckdb(glob: str) -> list[tuple[str, float]]:
    rows = duckdb.sql(QUERY.format(glob=glob)).fetchall()
    return [(m, None if v is None else round(float(v), 9)) for m, v in rows]


def test_every_trial_file_has_the_studys_schema(study: Path) -> None:
    schema = read_schema(study)
    assert schema is not None
    files = sorted((study / "trials").glob("*.parquet"))
    assert len(files) == 5  # two single-task baselines, three multi-task trials
    for path in files:
        assert pq.read_schema(path).remove_metadata() == schema, path.name
    assert not any(pa.types.is_null(t) for t in schema.types)
    assert schema.field("hp.amtl.margin").type == pa.float64()
    assert schema.field("task_params_trainable.semseg").type == pa.int64()


def test_duckdb_and_polars_read_the_per_trial_files(study: Path) -> None:
    glob = f"{study}/trials/*.parquet"
    expected = _expected(study)
    assert {m for m, _ in expected} == {"ew", "dwa", "amtl"}
    assert _duckdb(glob) == expected
    frame = pl.read_parquet(glob)
    assert frame.height == 5 and frame["trial_id"].n_unique() == 5
    assert frame.schema["hp.dwa.temperature"] == pl.Float64
    assert frame.schema["labels.semseg"] == pl.Int64
    history = pl.read_parquet(f"{study}/history/*.parquet")
    assert set(history["trial_id"]) == set(frame["trial_id"])


def test_duckdb_and_polars_read_the_compacted_study(study: Path, tmp_path: Path) -> None:
    copy = tmp_path / "outside"
    shutil.copytree(study, copy)
    expected = _expected(copy)
    compact(copy)
    assert [p.name.split("-")[0] for p in (copy / "trials").iterdir()] == ["compacted"]
    assert _duckdb(f"{copy}/trials/*.parquet") == expected
    frame = pl.read_parquet(f"{copy}/trials/*.parquet")
    assert frame.height == 5 and frame["trial_id"].is_sorted()
    history = pl.read_parquet(f"{copy}/history/*.parquet")
    keys = history.select("trial_id", "epoch").rows()
    assert keys == sorted(keys)
    assert _expected(copy) == expected
