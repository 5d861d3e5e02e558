"""Temporary files a killed writer leaves are removed by the next write into the study,
and every one of them by a resume; a live writer's file is never touched."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from search_spaces import load_space
from study.errors import UserError
from study.run import run_study
from study.spec import StudySpec
from study.store import TMP_SUFFIX, write_trial

_KILLED_WRITER = """
import sys, time
from pathlib import Path
from study.store import write_atomically

def write(tmp):
    tmp.write_bytes(b"half a file")
    print("writing", flush=True)
    time.sleep(600)

write_atomically(Path(sys.argv[1]), write)
"""


def _leftovers(folder: Path) -> list[Path]:
    return sorted(folder.rglob(f".*{TMP_SUFFIX}"))


def _killed_write(target: Path) -> None:
    writer = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(target)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert writer.stdout.readline() == "writing\n"
    writer.send_signal(signal.SIGKILL)
    writer.wait()


def _row(trial_id: str) -> dict:
    return {"trial_id": trial_id, "kind": "multi_task", "status": "completed", "method": "ew"}


def test_next_write_removes_a_killed_writers_file_only(tmp_path: Path) -> None:
    trials = tmp_path / "study" / "trials"
    _killed_write(trials / "a.parquet")
    [left] = _leftovers(tmp_path)
    # A live writer's file in the same folder (this process is alive and writing).
    host = left.name.removesuffix(TMP_SUFFIX).rsplit("@", 1)[1]
    live = trials / f".b.parquet.{'0' * 32}.{os.getpid()}@{host}{TMP_SUFFIX}"
    live.write_bytes(b"")

    write_trial(tmp_path, "study", _row("c"))
    assert not left.exists()
    assert live.exists()
    assert (trials / "c.parquet").is_file()


def test_a_day_old_file_is_removed_whoever_wrote_it(tmp_path: Path) -> None:
    trials = tmp_path / "study" / "trials"
    trials.mkdir(parents=True)
    old = trials / f".a.parquet.{'1' * 32}.1@another-host{TMP_SUFFIX}"
    old.write_bytes(b"")
    recent = trials / f".b.parquet.{'2' * 32}.1@another-host{TMP_SUFFIX}"
    recent.write_bytes(b"")
    day_ago = time.time() - 25 * 3600
    os.utime(old, (day_ago, day_ago))
    write_trial(tmp_path, "study", _row("c"))
    assert not old.exists() and recent.exists()


def test_resume_removes_every_leftover_before_it_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MTLSTUDY_SECRET_DIR", str(tmp_path / "secret"))
    study = tmp_path / "results" / "s"
    (study / "tune" / "search").mkdir(parents=True)  # a started study, as a killed driver leaves it
    (study / "tune" / "search" / "tuner.pkl").write_bytes(b"")
    history = study / "history"
    _killed_write(history / "a.parquet")
    other_host = study / "trials" / f".b.parquet.{'3' * 32}.7@another-host{TMP_SUFFIX}"
    other_host.parent.mkdir()
    other_host.write_bytes(b"")
    unrelated = study / "tune" / ".tune_own.tmp"  # not ours: left alone
    unrelated.write_bytes(b"")
    assert len(_leftovers(study)) == 3
    # baselines: store with none in the store stops the study before Ray starts.
    spec = StudySpec(name="s", tasks=["semseg", "depth"], results=str(tmp_path / "results"))
    spec = spec.model_copy(update={"baselines": "store"})
    with pytest.raises(UserError, match="no single-task baseline"):
        run_study(spec, load_space("default"), resume=True, log=lambda _: None)
    assert _leftovers(study) == [unrelated]
