"""The Parquet store: flattened trial rows, tidy history, atomic writes, and queries."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from study.store import (
    SCHEMA_VERSION,
    load_history,
    load_trials,
    write_history,
    write_trial,
)
from study.store import _load as study_results


def _row(trial_id: str, **extra: object) -> dict:
    return {
        "trial_id": trial_id,
        "status": "completed",
        "method": "dwa",
        "tasks": ["semseg", "depth"],
        "hp": {"optim": {"lr": 1e-3}, "method": "dwa"},
        "final": {"semseg": {"miou": 0.5}, "depth": {"rmse": 0.7}},
        **extra,
    }


def _history(epochs: int = 2) -> list[dict]:
    return [
        {"epoch": e, "split": "val", "task": t, "metric": m, "value": v * e}
        for e in range(1, epochs + 1)
        for t, m, v in [("semseg", "miou", 0.1), ("depth", "rmse", 1.0), ("all", "loss", 2)]
    ]


def test_trial_row_round_trip_flattens_nested_dicts(tmp_path: Path) -> None:
    path = write_trial(tmp_path, "s1", _row("t1", error=None))
    assert path == tmp_path / "s1" / "trials" / "t1.parquet"
    frame = load_trials(tmp_path)
    assert len(frame) == 1
    row = frame.iloc[0]
    assert {"final.semseg.miou", "final.depth.rmse", "hp.optim.lr", "hp.method"} <= set(frame)
    assert "final" not in frame and "hp" not in frame
    assert row["final.semseg.miou"] == 0.5 and row["hp.optim.lr"] == 1e-3
    assert list(row["tasks"]) == ["semseg", "depth"]  # a list column, not a string
    assert row["schema_version"] == SCHEMA_VERSION and row["study"] == "s1"
    assert row["error"] is None or pd.isna(row["error"])


def test_trial_row_needs_a_string_trial_id(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="trial_id"):
        write_trial(tmp_path, "s1", {"status": "completed"})
    with pytest.raises(ValueError, match="trial_id"):
        write_trial(tmp_path, "s1", {"trial_id": 3})
    with pytest.raises(ValueError, match="plain file name"):
        write_trial(tmp_path, "s1", {"trial_id": "../escape"})


def test_rewrite_replaces_the_trial_atomically(tmp_path: Path, monkeypatch) -> None:
    write_trial(tmp_path, "s1", _row("t1", status="running"))
    replaced: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
        # The final name still holds the old, complete file until the rename.
        assert pq.read_table(dst)["status"][0].as_py() == "running"
        assert pq.read_table(src)["status"][0].as_py() == "completed"
        replaced.append((Path(src).name, Path(dst).name))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    write_trial(tmp_path, "s1", _row("t1", status="completed"))
    assert len(replaced) == 1
    tmp_name, final_name = replaced[0]
    assert final_name == "t1.parquet" and tmp_name.startswith(".") and tmp_name.endswith(".tmp")
    # One row per trial, the new one, and no temporary file left behind.
    frame = load_trials(tmp_path)
    assert list(frame["status"]) == ["completed"]
    assert [p.name for p in (tmp_path / "s1" / "trials").iterdir()] == ["t1.parquet"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path, monkeypatch) -> None:
    write_trial(tmp_path, "s1", _row("t1", status="running"))

    def broken(src: str | os.PathLike, dst: str | os.PathLike) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        write_trial(tmp_path, "s1", _row("t1", status="completed"))
    assert [p.name for p in (tmp_path / "s1" / "trials").iterdir()] == ["t1.parquet"]
    assert list(load_trials(tmp_path)["status"]) == ["running"]


def test_history_round_trip(tmp_path: Path) -> None:
    rows = [{"trial_id": "t1", **r} for r in _history()]
    write_history(tmp_path, "s1", "t1", rows)
    frame = load_history(tmp_path / "s1")
    assert len(frame) == 6
    assert list(frame.columns[:6]) == ["trial_id", "epoch", "split", "task", "metric", "value"]
    assert frame["epoch"].dtype == "int64" and frame["value"].dtype == "float64"
    assert set(frame["study"]) == {"s1"} and (frame["schema_version"] == SCHEMA_VERSION).all()
    loss = frame.query("metric == 'loss' and epoch == 2")["value"]
    assert list(loss) == [4.0]  # an int value is stored as float


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"epoch": 1, "split": "val", "task": "depth", "metric": "rmse"}, r"missing \['value'\]"),
        ({**_history()[0], "step": 3}, r"unexpected \['step'\]"),
        ({**_history()[0], "epoch": "1"}, "'epoch' must be an int"),
        ({**_history()[0], "epoch": 1.0}, "'epoch' must be an int"),
        ({**_history()[0], "value": "high"}, "'value' must be a float"),
        ({**_history()[0], "task": None}, "'task' must be a str"),
        ({**_history()[0], "trial_id": "other"}, "trial_id"),
    ],
)
def test_history_rows_are_validated(tmp_path: Path, row: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        write_history(tmp_path, "s1", "t1", [_history()[1], row])
    assert not (tmp_path / "s1" / "history" / "t1.parquet").exists()


def test_several_studies_and_several_roots(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    write_trial(first, "s1", _row("t1"))
    write_trial(first, "s2", _row("t2"))
    write_trial(second, "s3", _row("t3"))
    for root, study, trial in [(first, "s1", "t1"), (first, "s2", "t2"), (second, "s3", "t3")]:
        write_history(root, study, trial, _history())

    assert sorted(load_trials(first)["study"]) == ["s1", "s2"]
    both = load_trials([first, second])
    assert sorted(both["trial_id"]) == ["t1", "t2", "t3"]
    assert both.index.tolist() == [0, 1, 2]
    # A root and one of its own study folders: each trial is read once.
    assert sorted(load_trials([first, first / "s1", str(second / "s3")])["trial_id"]) == [
        "t1",
        "t2",
        "t3",
    ]
    history = load_history([first / "s2", second])
    assert sorted(set(history["study"])) == ["s2", "s3"] and len(history) == 12


def test_columns_are_pushed_down_and_checked(tmp_path: Path, monkeypatch) -> None:
    write_trial(tmp_path, "s1", _row("t1"))
    write_trial(tmp_path, "s1", _row("t2", hp={"optim": {"lr": 0.1}}))
    read: list[list[str]] = []
    real_scan = study_results._scan

    def spy(dataset, columns, filter):  # the columns the dataset scan can read at all
        read.append(dataset.schema.names)
        return real_scan(dataset, columns, filter)

    monkeypatch.setattr(study_results, "_scan", spy)
    frame = load_trials(tmp_path, columns=["trial_id", "hp.optim.lr"])
    assert list(frame.columns) == ["trial_id", "hp.optim.lr"]
    assert sorted(frame["hp.optim.lr"]) == [1e-3, 0.1]
    assert read and all(sorted(c) == ["hp.optim.lr", "trial_id"] for c in read)

    # The filter's columns are read too, but only the requested ones come back.
    read.clear()
    frame = load_trials(tmp_path, where="`hp.optim.lr` > 0.01", columns=["trial_id"])
    assert list(frame.columns) == ["trial_id"] and list(frame["trial_id"]) == ["t2"]
    assert all("final.semseg.miou" not in c for c in read)

    with pytest.raises(ValueError, match=r"unknown column\(s\) \['hp.optim.momentum'\]") as err:
        load_trials(tmp_path, columns=["trial_id", "hp.optim.momentum"])
    assert "hp.optim.lr" in str(err.value) and "\n" not in str(err.value)


def test_where_filters_rows(tmp_path: Path) -> None:
    write_trial(tmp_path, "s1", _row("t1", method="ew", final={"semseg": {"miou": 0.2}}))
    write_trial(tmp_path, "s1", _row("t2", method="dwa", final={"semseg": {"miou": 0.6}}))
    write_trial(tmp_path, "s1", _row("t3", method="dwa", final={"semseg": {"miou": 0.1}}))
    frame = load_trials(tmp_path, where="method == 'dwa' and `final.semseg.miou` > 0.5")
    assert list(frame["trial_id"]) == ["t2"]
    assert frame.index.tolist() == [0]
    with pytest.raises(ValueError, match="backticks"):
        load_trials(tmp_path, where="final.semseg.miou > 0.5")


def test_trials_with_different_hyperparameters_share_one_frame(tmp_path: Path) -> None:
    write_trial(tmp_path, "s1", _row("t1", hp={"method": "ew", "optim": {"lr": 1}}, error=None))
    write_trial(
        tmp_path,
        "s1",
        _row("t2", hp={"method": "dwa", "dwa": {"temperature": 2.0}, "optim": {"lr": 0.5}}),
    )
    write_trial(tmp_path, "s1", _row("t3", hp={"method": "ew"}, error="boom", tasks=[]))
    frame = load_trials(tmp_path).set_index("trial_id")
    assert pd.isna(frame.loc["t1", "hp.dwa.temperature"])
    assert frame.loc["t2", "hp.dwa.temperature"] == 2.0
    # An int in one trial and a float in another widen to float; a missing one is null.
    assert frame["hp.optim.lr"].dtype == "float64"
    assert frame.loc["t1", "hp.optim.lr"] == 1.0 and pd.isna(frame.loc["t3", "hp.optim.lr"])
    assert frame.loc["t3", "error"] == "boom" and list(frame.loc["t3", "tasks"]) == []


def test_missing_or_empty_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere.*<study>/trials/\*\.parquet"):
        load_trials(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty") as err:
        load_trials(tmp_path / "empty")
    assert "\n" not in str(err.value)
    # Trials but no history yet: asking for history says so.
    write_trial(tmp_path / "r", "s1", _row("t1"))
    with pytest.raises(FileNotFoundError, match="history"):
        load_history(tmp_path / "r")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_trials([tmp_path / "r", tmp_path / "nowhere"])


def test_stray_temporary_files_are_ignored(tmp_path: Path) -> None:
    write_trial(tmp_path, "s1", _row("t1"))
    write_history(tmp_path, "s1", "t1", _history())
    for kind in ("trials", "history"):
        folder = tmp_path / "s1" / kind
        # What an interrupted write leaves: a half file under a hidden temporary name.
        (folder / ".t2.parquet.0123abcd.tmp").write_bytes(b"PAR1 half a file")
        (folder / ".t3.parquet").write_bytes(b"PAR1 also half")
    assert list(load_trials(tmp_path)["trial_id"]) == ["t1"]
    assert set(load_history(tmp_path)["trial_id"]) == {"t1"}
