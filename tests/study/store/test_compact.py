"""Compaction: per-trial files merged into one file per kind, atomically, idempotently,
beside a running writer, on a local folder and on an S3 endpoint."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from study import store
from study.errors import UserError
from study.store import (
    RemoteRoot,
    compact,
    load_history,
    load_trials,
    read_trial_history,
    read_trial_row,
    result_files,
    write_history,
    write_trial,
)
from study.store import _compact as compaction


def _row(trial_id: str, status: str = "completed", value: float = 1.0) -> dict:
    return {"trial_id": trial_id, "status": status, "method": "ew", "delta_m": value}


def _history(trial_id: str, epochs: int) -> list[dict]:
    return [
        {"epoch": e, "split": "val", "task": t, "metric": "loss", "value": float(e)}
        for e in range(epochs, 0, -1)  # written out of order: compaction sorts
        for t in ("semseg", "depth")
    ]


def _study(root: Path, trials: int = 5, study: str = "s") -> Path:
    for i in range(trials):
        write_trial(root, study, _row(f"t{i}", value=float(i)))
        write_history(root, study, f"t{i}", _history(f"t{i}", 3))
    return root / study


def _rows(folder: Path) -> tuple[list, list]:
    trials = load_trials(folder).sort_values("trial_id")
    history = load_history(folder).sort_values(["trial_id", "epoch", "task"])
    return trials.to_dict("records"), history.to_dict("records")


def _names(folder: Path, kind: str) -> list[str]:
    return sorted(p.name for p in (folder / kind).iterdir())


def test_compaction_merges_sorts_and_is_idempotent(tmp_path: Path) -> None:
    folder = _study(tmp_path)
    before = _rows(folder)
    result = compact(folder)
    assert result.merged == {"trials": 5, "history": 5} and result.rows["history"] == 30
    for kind in ("trials", "history"):
        (name,) = _names(folder, kind)
        assert name.startswith("compacted-") and name.endswith(".parquet")
    assert _rows(folder) == before
    history = pq.read_table(next((folder / "history").iterdir()))
    names = ["split", "task", "metric", "trial_id", "epoch"]
    keys = list(zip(*(history[n].to_pylist() for n in names), strict=True))
    assert keys == sorted(keys)  # by what each row measures, then trial and epoch
    files = {k: _names(folder, k) for k in ("trials", "history")}
    again = compact(folder)
    assert again.merged == {"trials": 0, "history": 0}
    assert {k: _names(folder, k) for k in ("trials", "history")} == files
    assert _rows(folder) == before


def test_a_trial_written_after_compaction_began_is_kept_and_read_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _study(tmp_path)
    merge = compaction._merge

    def merge_while_the_study_writes(*args: object) -> object:
        # The sources are read; the study now reports: t1 again, and a new trial t9.
        if args[1] == "trials":
            write_trial(tmp_path, "s", _row("t1", status="completed", value=42.0))
            write_trial(tmp_path, "s", _row("t9", status="running"))
        else:
            write_history(tmp_path, "s", "t1", _history("t1", 4))
        return merge(*args)

    monkeypatch.setattr(compaction, "_merge", merge_while_the_study_writes)
    result = compact(folder)
    monkeypatch.undo()
    assert result.kept == {"trials": 1, "history": 1}  # t1's newer files
    assert "t1.parquet" in _names(folder, "trials") and "t9.parquet" in _names(folder, "trials")
    trials = load_trials(folder).set_index("trial_id")
    assert sorted(trials.index) == ["t0", "t1", "t2", "t3", "t4", "t9"]  # each once
    assert trials.loc["t1", "delta_m"] == 42.0  # the newer row, not the compacted one
    assert sorted(load_history(folder, where="trial_id == 't1'")["epoch"]) == [
        1,
        1,
        2,
        2,
        3,
        3,
        4,
        4,
    ]
    assert len(load_trials(folder, where="delta_m > 0", columns=["delta_m"])) == 5
    # The driver reading one trial back sees the newest rows too.
    assert read_trial_row(tmp_path, "s", "t1")["delta_m"] == 42.0
    assert read_trial_row(tmp_path, "s", "t3")["delta_m"] == 3.0  # from the compacted file
    assert len(read_trial_history(tmp_path, "s", "t3")) == 6
    # The next compaction takes the newer rows in, still once each.
    compact(folder)
    assert len(_names(folder, "trials")) == 1
    trials = load_trials(folder).set_index("trial_id")
    assert trials.index.is_unique and trials.loc["t1", "delta_m"] == 42.0 and "t9" in trials.index


def test_a_mixed_store_after_an_interrupted_compaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _study(tmp_path)
    before = _rows(folder)
    # Killed after the commit, before any merged file was deleted.
    monkeypatch.setattr(compaction._LocalStore, "remove", lambda self, path, expected: False)
    compact(folder)
    monkeypatch.undo()
    assert len(_names(folder, "trials")) == 6  # the compacted file and every leftover
    assert _rows(folder) == before  # each row once
    assert [p.name for p in result_files(folder)][0].startswith("compacted-")
    assert len(result_files(folder)) == 1
    write_trial(tmp_path, "s", _row("t7"))  # a new trial beside them
    assert len(load_trials(folder)) == 6
    result = compact(folder)  # finishes the deletions, merges the new trial
    assert result.deleted["trials"] >= 5 and len(_names(folder, "trials")) == 1
    assert sorted(load_trials(folder)["trial_id"]) == sorted(
        [r["trial_id"] for r in before[0]] + ["t7"]
    )


def test_compact_on_the_command_line(tmp_path: Path) -> None:
    folder = _study(tmp_path, trials=2)
    run = [sys.executable, "-m", "study.cli", "compact"]
    done = subprocess.run([*run, str(folder)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "s: trials: 2 files → 2 rows; history: 2 files → 12 rows"
    bad = subprocess.run(
        [*run, str(tmp_path / "nope")], capture_output=True, text=True, check=False
    )
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "is not a study folder; expected" in bad.stderr


def test_compaction_on_an_s3_endpoint(
    s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MTLSTUDY_CACHE", str(tmp_path / "cache"))
    uri = f"{s3_bucket}/{uuid.uuid4().hex[:8]}/results"
    writer = RemoteRoot.open(uri, study="s")
    _study(writer.pull(), trials=4)
    writer.push("s")
    before = _rows(store.readable(f"{uri}/s"))
    result = compact(f"{uri}/s")
    assert result.merged == {"trials": 4, "history": 4}
    fs, path = pafs.FileSystem.from_uri(f"{uri}/s")
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    names = sorted(i.path[len(path) + 1 :] for i in infos if i.type == pafs.FileType.File)
    assert [n.split("/")[0] for n in names] == ["history", "trials"]
    assert all(n.split("/")[1].startswith("compacted-") for n in names)
    # A reader with another cache sees the same rows.
    monkeypatch.setenv("MTLSTUDY_CACHE", str(tmp_path / "reader"))
    assert _rows(store.readable(f"{uri}/s")) == before
    assert compact(f"{uri}/s").merged == {"trials": 0, "history": 0}


def test_a_second_compaction_at_once_is_refused(tmp_path: Path) -> None:
    """Two at once would merge the same files twice; the second is one line, and changes
    nothing."""
    import fcntl

    folder = _study(tmp_path)
    before = {k: _names(folder, k) for k in ("trials", "history")}
    with open(folder / compaction.COMPACT_LOCK, "a") as running:  # another compaction
        fcntl.flock(running, fcntl.LOCK_EX)
        with pytest.raises(UserError, match="another compaction of s is running"):
            compact(folder)
        assert {k: _names(folder, k) for k in ("trials", "history")} == before
    assert compact(folder).merged == {"trials": 5, "history": 5}  # once it has ended


@pytest.mark.parametrize(
    "where",
    [
        "split == 'val' and task == 'depth' and metric == 'loss'",
        "trial_id == 't3'",
        "task == 'semseg' and epoch >= 2",
        "trial_id == 'nobody'",
    ],
)
def test_a_filter_reads_only_the_row_groups_that_may_match(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    from study.store import _load

    folder = _study(tmp_path)
    want = load_history(folder, where=where).sort_values(["trial_id", "epoch", "task"])
    monkeypatch.setitem(compaction.ROW_GROUP_ROWS, "history", 4)  # 30 rows: 8 groups
    compact(folder)
    (path,) = (folder / "history").iterdir()
    schema = pq.read_schema(path)
    types = dict(zip(schema.names, schema.types, strict=True))
    expression, _ = store.where_expression(where, types)
    groups = _load._row_groups(path, schema, expression)
    assert len(groups) < pq.ParquetFile(path).num_row_groups  # the others are never read
    got = load_history(folder, where=where).sort_values(["trial_id", "epoch", "task"])
    assert got.to_dict("records") == want.to_dict("records")
