"""study.store: the one read path of the Parquet store, its `where` language, and the
query benchmark (run tiny: a test never asserts a time)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from study import store as results
from study.bench.query import format_table, measure_query, write_synthetic_store
from study.store import (
    SCHEMA_VERSION,
    _load,
    load,
    load_history,
    load_table,
    load_trials,
    result_files,
    write_history,
    write_trial,
)


def _trial(trial_id: str, **extra: object) -> dict:
    return {
        "trial_id": trial_id,
        "status": "completed",
        "kind": "multi_task",
        "architecture": "rcm_resnet",
        "tasks": ["semseg", "depth"],
        **extra,
    }


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """Four trials whose files differ in columns and types."""
    root = tmp_path / "results"
    write_trial(
        root,
        "s1",
        _trial(
            "t1",
            architecture="hard_sharing",
            method="ew",
            delta_m=-0.1,
            epochs=5,
            converged=True,
            hp={"method": "ew", "optim": {"lr": 1e-3}},
            final={"semseg": {"miou": 0.2}},
        ),
    )
    write_trial(
        root,
        "s1",
        _trial(
            "t2",
            method="dwa",
            delta_m=0.02,
            epochs=4,
            converged=False,
            hp={"method": "dwa", "optim": {"lr": 0.1}, "dwa": {"temperature": 2.0}},
            final={"semseg": {"miou": 0.6}},
        ),
    )
    # A failed trial: no metrics, no Δm, an error.
    write_trial(root, "s1", _trial("t3", method="dwa", status="error", error="boom", epochs=0))
    # lr is an int here (a float elsewhere); no `converged` column at all.
    write_trial(
        root,
        "s1",
        _trial(
            "t4",
            method="amtl",
            delta_m=0.05,
            epochs=5,
            hp={"method": "amtl", "optim": {"lr": 1}},
            final={"semseg": {"miou": 0.5}},
        ),
    )
    return root


def _ids(root: Path, where: str) -> list[str]:
    return list(load_trials(root, where=where, columns=["trial_id"])["trial_id"])


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("method == 'dwa'", ["t2", "t3"]),
        ('method == "dwa"', ["t2", "t3"]),
        ("method != 'dwa'", ["t1", "t4"]),
        ("`final.semseg.miou` > 0.5", ["t2"]),
        ("`final.semseg.miou` >= 0.5", ["t2", "t4"]),
        ("`final.semseg.miou` < 0.5", ["t1"]),
        ("`final.semseg.miou` <= 0.5", ["t1", "t4"]),
        ("0.3 < `final.semseg.miou` <= 0.6", ["t2", "t4"]),
        ("0.5 <= `final.semseg.miou`", ["t2", "t4"]),
        ("method in ['dwa', 'amtl']", ["t2", "t3", "t4"]),
        ("method not in ('dwa',)", ["t1", "t4"]),
        ("method in []", []),
        ("error in ['boom', None]", ["t1", "t2", "t3", "t4"]),
        ("delta_m == None", ["t3"]),
        ("delta_m != None", ["t1", "t2", "t4"]),
        ("delta_m is None", ["t3"]),
        ("delta_m is not None", ["t1", "t2", "t4"]),
        ("isna(delta_m)", ["t3"]),
        ("notna(error)", ["t3"]),
        ("isnull(converged) and notnull(delta_m)", ["t4"]),
        ("not method == 'dwa'", ["t1", "t4"]),
        ("not (method == 'dwa' and status == 'error')", ["t1", "t2", "t4"]),
        # Missing values compare false, except != (as in pandas).
        ("`final.semseg.miou` != 0.2", ["t2", "t3", "t4"]),
        ("not `final.semseg.miou` > 0.3", ["t1", "t3"]),
        ("method == 'dwa' or architecture == 'hard_sharing'", ["t1", "t2", "t3"]),
        ("(method == 'dwa') & (status == 'completed')", ["t2"]),
        ("(method == 'ew') | (method == 'amtl')", ["t1", "t4"]),
        ("~(status == 'completed')", ["t3"]),
        ("converged", ["t1"]),
        ("converged == True", ["t1"]),
        ("not converged", ["t2", "t3", "t4"]),
        ("True", ["t1", "t2", "t3", "t4"]),
        ("`final.semseg.miou` * 2 > 1.1", ["t2"]),
        ("`final.semseg.miou` + 0.1 > 0.65", ["t2"]),
        ("`final.semseg.miou` - `hp.optim.lr` > 0.45", ["t2"]),
        ("epochs / 2 == 2.5", ["t1", "t4"]),  # true division of ints
        ("epochs // 2 == 2", ["t1", "t2", "t4"]),
        ("epochs ** 2 == 16", ["t2"]),
        ("-delta_m > 0.05", ["t1"]),
        ("delta_m > -0.05", ["t2", "t4"]),
        ("abs(delta_m) >= 0.05", ["t1", "t4"]),
        ("`hp.optim.lr` == 1", ["t4"]),  # an int in its file, a float in the others
        ("`hp.dwa.temperature` > 1", ["t2"]),  # a column only t2's file has
        ("method == 'dwa' and `final.semseg.miou` > 0.5\n or method == 'ew'", ["t1", "t2"]),
        ("status == 'a`b'", []),  # a backtick inside a string is part of the string
    ],
)
def test_where_operators(store: Path, where: str, expected: list[str]) -> None:
    assert _ids(store, where) == expected


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("nope == 1", r"unknown column\(s\) \['nope'\]; available include architecture"),
        ("methd == 'dwa'", r"\['methd'\]; did you mean method, hp.method\?"),
        ("`final.depth.rmse` > 1", r"unknown column\(s\) \['final.depth.rmse'\]"),
        ("method ==", "invalid syntax"),
        ("method = 'dwa'", "invalid syntax"),
        ("`method == 'dwa'", "unclosed backtick"),
        ("final.semseg.miou > 0.5", "backticks: `final.semseg.miou`"),
        ("method > 1", "column 'method' holds string"),
        ("delta_m == 'x'", "column 'delta_m' holds double"),
        ("method in ['dwa', 1]", "holds string"),
        ("method in 'dwa'", "list or tuple"),
        ("delta_m < None", "None can only be compared"),
        ("delta_m", "not true/false"),
        ("method is 'dwa'", "only compares with None"),
        (
            "__import__('os').system('touch pwned')",
            r"function __import__\('os'\).system\(\) is not allowed",
        ),
        ("open('pwned', 'w')", r"function open\(\) is not allowed"),
        ("__import__('os')", r"function __import__\(\) is not allowed"),
        ("method.__class__ == 1", "backticks"),
        ("method[0] == 'd'", "unsupported syntax: Subscript"),
        ("[m for m in method]", "unsupported syntax: ListComp"),
        ("(lambda: 1)()", "not allowed"),
        ("isna(delta_m, error)", "not allowed"),
        ("f'{method}' == 'dwa'", "unsupported syntax: JoinedStr"),
        ("method == b'dwa'", "unsupported literal"),
        ("method @ 1", "unsupported operator"),
        ("(" * 500 + "True" + ")" * 500, "nested|syntax"),
    ],
)
def test_where_errors_are_one_line(store: Path, where: str, message: str, monkeypatch) -> None:
    monkeypatch.chdir(store)
    with pytest.raises(ValueError, match=message) as err:
        load_trials(store, where=where)
    assert "\n" not in str(err.value) and str(err.value).startswith("where ")
    assert not (store / "pwned").exists()


def test_a_column_with_no_value_in_any_file_compares_false(tmp_path: Path) -> None:
    for trial_id in ("a", "b"):
        write_trial(tmp_path, "s", {"trial_id": trial_id, "error": None})
    assert _ids(tmp_path, "error == 'boom'") == []
    assert _ids(tmp_path, "error in ['boom']") == []
    assert _ids(tmp_path, "error in ['boom', None]") == ["a", "b"]
    assert _ids(tmp_path, "error != 'boom'") == ["a", "b"]


def test_where_expression_names_the_columns_it_reads() -> None:
    types = {"a.b": pa.float64(), "c": pa.string(), "d": pa.int64()}
    expression, used = results.where_expression("`a.b` > d and c in ['x'] or isna(c)", types)
    assert used == ["a.b", "d", "c"]
    table = pa.table({"a.b": [1.0, 3.0, None], "c": ["x", "x", None], "d": [2, 2, 2]})
    assert table.filter(expression)["d"].to_pylist() == [2, 2]


def test_projection_reads_only_the_asked_and_filtered_columns(store: Path, monkeypatch) -> None:
    scanned: list[tuple[list[str], list[str] | None]] = []
    real_scan = _load._scan

    def spy(dataset, columns, filter):
        scanned.append((dataset.schema.names, columns))
        return real_scan(dataset, columns, filter)

    monkeypatch.setattr(_load, "_scan", spy)
    frame = load_trials(store, where="`final.semseg.miou` > 0.3", columns=["trial_id", "method"])
    assert list(frame.columns) == ["trial_id", "method"]
    assert list(frame["trial_id"]) == ["t2", "t4"]
    (names, columns), *_ = scanned
    assert sorted(names) == ["final.semseg.miou", "method", "trial_id"]
    assert columns == ["trial_id", "method"]

    # A column asked twice comes once; a string names one column.
    assert list(load_trials(store, columns=["method", "method"]).columns) == ["method"]
    assert list(load_trials(store, columns="method").columns) == ["method"]
    with pytest.raises(ValueError, match=r"unknown column\(s\) \['nope'\]"):
        load_trials(store, columns=["trial_id", "nope"])


def test_string_columns_come_back_as_strings_in_file_order(store: Path) -> None:
    frame = load_trials(store)
    assert list(frame["trial_id"]) == ["t1", "t2", "t3", "t4"]
    assert frame.index.tolist() == [0, 1, 2, 3]
    for column in ("trial_id", "method", "status", "error", "study"):
        assert pd.api.types.is_string_dtype(frame[column]), column
        assert not isinstance(frame[column].dtype, pd.CategoricalDtype)
    assert list(frame.loc[0, "tasks"]) == ["semseg", "depth"]
    table = load_table(store, "trials", columns=["method", "error"])
    assert table.schema.field("method").type == pa.string()


def test_schema_differences_across_files(store: Path) -> None:
    frame = load_trials(store).set_index("trial_id")
    # Missing in a file → null there; an int in one file and a float in others → float.
    assert pd.isna(frame.loc["t1", "hp.dwa.temperature"])
    assert frame.loc["t2", "hp.dwa.temperature"] == 2.0
    assert frame["hp.optim.lr"].dtype == "float64" and frame.loc["t4", "hp.optim.lr"] == 1.0
    assert pd.isna(frame.loc["t3", "delta_m"]) and pd.isna(frame.loc["t4", "converged"])
    assert frame.loc["t3", "error"] == "boom" and pd.isna(frame.loc["t1", "error"])


def _foreign_file(root: Path, study: str, row: dict) -> None:
    """A trial file the store's writer would refuse (an outside tool's, say)."""
    table = pa.table({k: [v] for k, v in {**row, "study": study, "schema_version": 1}.items()})
    folder = root / study / "trials"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / f"{row['trial_id']}.parquet")


def test_the_writer_keeps_declared_column_types(store: Path) -> None:
    with pytest.raises(ValueError, match="column 'epochs': 'five' is not a int64"):
        write_trial(store, "s2", _trial("t5", method="ew", epochs="five"))
    write_trial(store, "s2", _trial("t6", method="ew", error=None, stage=None))
    schema = pq.read_schema(store / "s2" / "trials" / "t6.parquet")
    assert schema.field("error").type == pa.string() == schema.field("stage").type


def test_a_type_conflict_names_the_column_and_spares_other_columns(store: Path) -> None:
    _foreign_file(store, "s2", _trial("t5", method="ew", epochs="five"))
    with pytest.raises(ValueError, match=r"column 'epochs' is int64 in .*t1.parquet but string"):
        load_trials(store)
    with pytest.raises(ValueError, match="column 'epochs'"):
        load_trials(store, where="epochs > 1", columns=["trial_id"])
    assert len(load_trials(store, columns=["trial_id", "method"])) == 5


def test_an_unreadable_file_is_named(store: Path) -> None:
    (store / "s1" / "trials" / "broken.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match=r"broken.parquet: not a readable Parquet file"):
        load_trials(store)


def test_a_rewritten_or_new_file_is_seen_by_the_next_load(store: Path) -> None:
    assert "hp.cagrad.c" not in load_trials(store)  # the set's schema is now cached
    write_trial(store, "s1", _trial("t1", method="cagrad", hp={"cagrad": {"c": 0.5}}))
    frame = load_trials(store, where="`hp.cagrad.c` == 0.5")
    assert list(frame["trial_id"]) == ["t1"] and list(frame["method"]) == ["cagrad"]
    _foreign_file(store, "s1", _trial("t9", method="ew", epochs="nine"))
    with pytest.raises(ValueError, match="column 'epochs'"):
        load_trials(store)


def test_several_studies_and_roots_together(store: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    write_trial(store, "s2", _trial("u1", method="dwa", delta_m=0.03))
    write_trial(other, "s3", _trial("v1", method="dwa", delta_m=0.04))
    frame = load_trials([store, other / "s3"], where="method == 'dwa'")
    assert sorted(zip(frame["study"], frame["trial_id"], strict=True)) == [
        ("s1", "t2"),
        ("s1", "t3"),
        ("s2", "u1"),
        ("s3", "v1"),
    ]
    # The same study reached through its root and itself is read once.
    assert len(result_files([store, store / "s1"], "trials")) == 5
    assert len(load(store / "s2")) == 1


def test_history_and_schema_version(store: Path) -> None:
    rows = [
        {"epoch": e, "split": s, "task": "semseg", "metric": m, "value": v}
        for e in (1, 2)
        for s, m, v in (("val", "miou", 0.1 * e), ("train", "loss", 1.0 / e))
    ]
    write_history(store, "s1", "t1", rows)
    write_history(store, "s1", "t2", rows[:2])
    history = load_history(store, where="split == 'val' and epoch >= 1", columns=["trial_id"])
    assert list(history.columns) == ["trial_id"] and list(history["trial_id"]) == ["t1"] * 2 + [
        "t2"
    ]
    full = load(store, "history")
    assert list(full.columns) == [
        "trial_id",
        "epoch",
        "split",
        "task",
        "metric",
        "value",
        "study",
        "schema_version",
    ]
    assert (full["schema_version"] == SCHEMA_VERSION).all()
    assert (load_trials(store)["schema_version"] == SCHEMA_VERSION).all()
    with pytest.raises(ValueError, match="unknown column"):
        load_history(store, where="method == 'dwa'")  # a trials column
    with pytest.raises(ValueError, match="kind must be one of"):
        load(store, "leaderboard")  # type: ignore[arg-type]


def test_an_older_schema_version_reads_alongside(store: Path) -> None:
    # A file of an earlier layout: fewer columns, schema_version 0. Readers accept it.
    old = pa.table({"trial_id": ["t0"], "status": ["completed"], "schema_version": [0]})
    pq.write_table(old, store / "s1" / "trials" / "t0.parquet")
    frame = load_trials(store, where="schema_version < 1")
    assert list(frame["trial_id"]) == ["t0"] and pd.isna(frame.loc[0, "method"])


def test_temporary_and_hidden_files_are_never_read(store: Path) -> None:
    for kind in ("trials", "history"):
        folder = store / "s1" / kind
        folder.mkdir(exist_ok=True)
        (folder / ".t9.parquet.0123abcd.tmp").write_bytes(b"PAR1 half a file")
        (folder / ".t9.parquet").write_bytes(b"PAR1 half")
        (folder / "notes.txt").write_text("not a result")
    (store / ".hidden-study" / "trials").mkdir(parents=True)
    pq.write_table(pa.table({"trial_id": ["h"]}), store / ".hidden-study" / "trials" / "h.parquet")
    assert list(load_trials(store)["trial_id"]) == ["t1", "t2", "t3", "t4"]
    with pytest.raises(FileNotFoundError, match="no history results"):
        load_history(store)


def test_the_synthetic_store_reads_back(tmp_path: Path) -> None:
    written = write_synthetic_store(tmp_path, trials=60, history=600, files=12)
    assert written["trial_rows"] == 60 and written["history_rows"] == 600
    trials = load_trials(tmp_path)
    assert len(trials) == 60 and trials["trial_id"].is_unique
    assert set(trials["status"]) <= {"completed", "stopped_early", "error", "running"}
    assert trials["hp.model.head_channels"].dtype == "float64"  # int in some files
    assert {"final.semseg.miou", "best.depth.rmse", "delta_m", "hp.optim.lr"} <= set(trials)
    history = load_history(tmp_path, where="metric == 'miou' and task == 'semseg'")
    assert set(history["split"]) == {"val"} and len(history) == 60


def test_measure_query_returns_figures(tmp_path: Path) -> None:
    figures = measure_query(trials=200, history=2000, files=8, rounds=1, folder=tmp_path / "s")
    assert figures["store"]["trial_rows"] == 200 and figures["store"]["history_rows"] == 2000
    queries = figures["queries"]
    assert len(queries) == 3
    for cell in queries.values():
        assert cell["cold_s"] > 0 and cell["median_s"] > 0 and cell["result_rows"] > 0
    after = figures["compaction"]
    assert after["files"] == 2 * figures["store"]["studies"]  # one per study and kind
    for name, cell in after["queries"].items():
        assert cell["result_rows"] == queries[name]["result_rows"], name  # the same rows
    text = format_table(figures)
    assert "best Δm per method × architecture" in text and "200 trial rows" in text
    assert "after compaction" in text
    with pytest.raises(ValueError, match="not empty"):
        measure_query(trials=10, history=10, files=1, folder=tmp_path / "s")
