"""The tabular benchmark: a tiny grid trained, read back, and resumed from its log."""

import json
from pathlib import Path

import pytest

from study.bench.table import Setting, read_table, train_table


@pytest.mark.timeout(600)
@pytest.mark.slow  # trains the references and two configurations
def test_the_table_records_every_epoch_and_resumes_from_its_log(tmp_path: Path) -> None:
    out = tmp_path / "table.parquet"
    setting = Setting(epochs=2, seeds=2, train_samples=32, val_samples=8)
    meta = train_table(out, setting, methods=("ew", "dwa"), limit=1, log=lambda line: None)
    assert meta["trained"] == 1 and set(meta["references"]) == {"semseg", "depth", "normals"}
    frame, stored = read_table(out)
    assert stored["references"] == meta["references"]
    assert len(frame) == 2 * 2  # seeds × epochs
    assert sorted(frame["epoch"].unique()) == [1, 2] and frame["delta_m"].notna().all()
    assert {"semseg/miou", "depth/rmse", "normals/mean_angle"} <= set(frame.columns)
    first = frame.drop(columns=[c for c in frame if frame[c].isna().all()])
    # A second run goes on: the first configuration is read from the log, not retrained.
    lines: list[str] = []
    meta = train_table(out, setting, methods=("ew", "dwa"), limit=2, log=lines.append)
    assert meta["trained"] == 2 and len(lines) == 1 and lines[0].startswith("2/2 ")
    journal = out.with_name(f"{out.name}.jsonl").read_text().splitlines()
    assert len(journal) == 3 and "references" in json.loads(journal[0])
    frame, _ = read_table(out)
    assert len(frame) == 2 * 2 * 2
    again = frame.iloc[: len(first)][list(first.columns)]
    assert again.reset_index(drop=True).equals(first.reset_index(drop=True))
    # Shipped without its log, the table itself says what is trained.
    out.with_name(f"{out.name}.jsonl").unlink()
    lines.clear()
    meta = train_table(out, setting, methods=("ew", "dwa"), limit=2, log=lines.append)
    assert meta["trained"] == 2 and lines == []
    rebuilt = out.with_name(f"{out.name}.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in rebuilt] == [json.loads(line) for line in journal]
    with pytest.raises(ValueError, match="another setting"):
        train_table(out, Setting(epochs=3), methods=("ew", "dwa"), limit=2)
