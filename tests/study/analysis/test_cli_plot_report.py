"""`mtlstudy plot` and `mtlstudy report` as a user meets them: a real subprocess for the
happy path, in-process (``main(argv)``) for the error lines."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pyarrow.parquet as pq
import pytest

from study.analysis import KINDS
from study.cli import _PLOT_KINDS, main


def _main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_cli_kinds_are_the_packages() -> None:
    assert _PLOT_KINDS == KINDS


def test_plot_all_and_report_in_a_subprocess(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "plots"
    done = subprocess.run(
        [sys.executable, "-m", "study.cli", "plot", str(store), "--kind", "all", "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{k}.{f}" for k in KINDS for f in ("png", "svg")
    )
    assert done.stdout.count("wrote ") == len(KINDS)
    assert "Traceback" not in done.stderr
    report = tmp_path / "report.html"
    done = subprocess.run(
        [sys.executable, "-m", "study.cli", "report", str(store), "--out", str(report)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"wrote {report}"
    assert report.read_text().count("<img ") == len(KINDS)


def test_pareto_on_parameters_and_a_task_metric(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _main(
        capsys, "plot", str(store), "--kind", "pareto", "--x", "params",
        "--y", "final.semseg.miou", "--out", str(tmp_path),
    )  # fmt: skip
    assert code == 0 and out.startswith("wrote ")
    assert matplotlib.image.imread(tmp_path / "pareto.png").shape[1] == 1200


def _error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code, out, err = _main(capsys, *args)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mtlstudy: error: "), err
    return lines[0]


def test_bad_input_is_one_line(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "plots")
    line = _error(capsys, "plot", str(store), "--kind", "violin", "--out", out)
    assert "invalid choice: 'violin'" in line
    line = _error(capsys, "plot", str(tmp_path / "nowhere"), "--kind", "pareto", "--out", out)
    assert "no such folder" in line
    (tmp_path / "empty").mkdir()
    line = _error(capsys, "plot", str(tmp_path / "empty"), "--kind", "pareto", "--out", out)
    assert "no trials results" in line
    line = _error(
        capsys, "plot", str(store), "--kind", "pareto", "--y", "hp.optim.lr", "--out", out
    )
    assert "cannot tell whether higher or lower 'hp.optim.lr' is better" in line
    line = _error(
        capsys, "plot", str(store), "--kind", "pareto", "--y", "final.depth.iou", "--out", out
    )
    assert "no metric 'iou'" in line
    (tmp_path / "file").write_text("x")
    line = _error(capsys, "plot", str(store), "--kind", "ranks", "--out", str(tmp_path / "file"))
    assert "is a file" in line
    line = _error(capsys, "report", str(store), "--out", str(tmp_path / "no" / "r.html"))
    assert "does not exist" in line
    line = _error(capsys, "report", str(store), "--out", str(tmp_path))
    assert "is a folder" in line
    assert not (tmp_path / "plots").exists()


def test_a_store_without_delta_m(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A study run with `baselines: none`: the plots that need Δm say so; the others draw."""
    root = tmp_path / "results"
    shutil.copytree(store / "hard_sharing-seed0", root / "s")
    for path in (root / "s" / "trials").glob("*.parquet"):
        table = pq.read_table(path)
        pq.write_table(table.drop([c for c in table.column_names if "delta_m" in c]), path)
    out = tmp_path / "plots"
    line = _error(capsys, "plot", str(root), "--kind", "heatmap", "--out", str(out))
    assert "no completed trial has 'delta_m'" in line and "baselines" in line
    code, stdout, err = _main(capsys, "plot", str(root), "--kind", "all", "--out", str(out))
    assert code == 0
    skipped = [line for line in err.splitlines() if line.startswith("skipped ")]
    assert {s.split(":")[0] for s in skipped} == {
        "skipped pareto",
        "skipped heatmap",
        "skipped parallel",
    }
    drawn = sorted(p.stem for p in out.glob("*.png"))
    assert drawn == ["cd", "curves", "importance", "ranks", "weights"]  # Δm is not needed
    code, _, _ = _main(capsys, "report", str(root), "--out", str(tmp_path / "r.html"))
    assert code == 0
    assert "Not drawn: pareto: no completed trial has" in (tmp_path / "r.html").read_text()


def test_nothing_written_is_lost_when_a_later_plot_fails(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "plots"
    assert _main(capsys, "plot", str(store), "--kind", "ranks", "--out", str(out))[0] == 0
    before = (out / "ranks.png").read_bytes()
    _error(capsys, "plot", str(store), "--kind", "pareto", "--y", "nope", "--out", str(out))
    assert (out / "ranks.png").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["ranks.png", "ranks.svg"]


def test_only_single_task_trials(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "results" / "s" / "trials"
    root.mkdir(parents=True)
    for path in (store / "hard_sharing-seed0" / "trials").glob("b-*.parquet"):
        shutil.copy(path, root / path.name)
    line = _error(
        capsys, "plot", str(tmp_path / "results"), "--kind", "all", "--out", str(tmp_path)
    )
    assert "no multi-task trials" in line
    line = _error(capsys, "report", str(tmp_path / "results"), "--out", str(tmp_path / "r.html"))
    assert "no multi-task trials" in line
