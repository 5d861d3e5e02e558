"""A whole study on a real local Ray: references, Optuna search, ASHA, Parquet, query."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from models import get_task
from study.analysis import leaderboard
from study.metrics import delta_m
from study.run import find_baselines, run_study
from study.spec import load_spec
from study.store import load_history, load_trials

SPEC = """
name: small
seed: 1
dataset: {{image_size: 32, train_samples: 32, val_samples: 16}}
tasks: [semseg, depth]
model: {{backbone: regnetx_002}}
methods: [ew, dwa, mgda, pcgrad_amtl]
potentials: {{depth: 0.5}}
trials: 4
concurrency: 2
epochs: 2
batch_size: 16
scheduler: {{name: asha, grace_period: 1, reduction_factor: 2}}
results: {results}
"""


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("study")
    spec_path = tmp / "spec.yaml"
    spec_path.write_text(SPEC.format(results=tmp / "results"))
    spec, space = load_spec(spec_path)
    PROGRESS.clear()
    outcome = run_study(spec, space, log=lambda line: None, progress=PROGRESS.append)
    assert outcome.errors == 0
    return outcome.results, spec_path


PROGRESS: list[str] = []


def test_one_trials_row_per_trial_with_tidy_history(finished_study: tuple[Path, Path]) -> None:
    results, _ = finished_study
    trials = load_trials(results)
    # The study compacted itself when it ended: one file holds every trial.
    (compacted,) = (results / "trials").glob("*.parquet")
    assert compacted.name.startswith("compacted-")
    assert trials["trial_id"].is_unique
    multi = trials[trials["kind"] == "multi_task"]
    single = trials[trials["kind"] == "single_task"]
    assert len(multi) == 4 and len(single) == 2
    assert set(multi["status"]) <= {"completed", "stopped_early"}
    assert (single["status"] == "completed").all()
    assert multi["delta_m"].notna().all() and single["delta_m"].isna().all()
    assert set(multi["method"]) <= {"ew", "dwa", "mgda", "pcgrad_amtl"}
    assert (trials["schema_version"] == 2).all()

    history = load_history(results)
    for _, row in trials.iterrows():
        rows = history[history["trial_id"] == row["trial_id"]]
        assert sorted(rows["epoch"].unique()) == list(range(1, row["epochs"] + 1))
        # Each epoch has one row per (split, task, metric).
        assert not rows.duplicated(["epoch", "split", "task", "metric"]).any()
        assert {"loss", "weight"} <= set(rows[rows["split"] == "train"]["metric"])


def test_delta_m_matches_references_and_leaderboard(finished_study: tuple[Path, Path]) -> None:
    results, spec_path = finished_study
    trials = load_trials(results)
    single = trials[trials["kind"] == "single_task"].set_index("trial_id")
    spec, _ = load_spec(spec_path)
    assert find_baselines(results.parent, spec).missing(spec.tasks) == []  # a rerun trains none
    records = {t: get_task(t, spec.dataset.num_classes) for t in spec.tasks}
    for _, row in trials[trials["status"] == "completed"].iterrows():
        if row["kind"] != "multi_task":
            continue
        # The row names its baselines, and its Δm is recomputed from theirs.
        ids = {t: row[f"baseline_trials.{t}"] for t in spec.tasks}
        assert all(list(single.loc[ids[t], "tasks"]) == [t] for t in spec.tasks)
        final = {
            t: {m.name: row[f"final.{t}.{m.name}"] for m in r.metrics} for t, r in records.items()
        }
        base = {
            t: {
                m.name: single.loc[ids[t], f"final.{t}.{m.name}"]
                for m in r.metrics
                if single.loc[ids[t], f"final.{t}.{m.name}"] != 0
            }
            for t, r in records.items()
        }
        assert row["delta_m"] == pytest.approx(delta_m(final, base, records))
    table = leaderboard(trials, ["semseg", "depth"])
    lines = table.splitlines()
    assert "Δm (%) ↑" in lines[0] and "semseg mIoU ↑" in lines[0] and "depth RMSE (m) ↓" in lines[0]
    assert lines[1].split()[:2] == ["baselines", "single-task"]
    multi = trials[trials["kind"] == "multi_task"]
    completed = multi[multi["status"] == "completed"]
    ranked = [line.split()[0] for line in lines[2:] if line.split()[0] in set(trials["trial_id"])]
    assert sorted(ranked) == sorted(completed["trial_id"])  # ASHA's stopped ones are counted
    stopped = int((multi["status"] == "stopped_early").sum())
    assert (f"not ranked: {stopped} stopped early" in table) == (stopped > 0)
    definition = next(i for i, line in enumerate(lines) if line.startswith("Δm (%) = "))
    assert definition >= len(lines) - 2 and max(map(len, lines)) <= 120


def test_query_command_reads_the_store_back(finished_study: tuple[Path, Path]) -> None:
    results, _ = finished_study
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "study.cli",
            "query",
            str(results.parent),
            "--where",
            "kind == 'multi_task'",
            "--columns",
            "trial_id",
            "method",
            "delta_m",
            "kind",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = json.loads(done.stdout)
    assert len(rows) == 4
    assert {r["trial_id"] for r in rows} == set(
        load_trials(results, where="kind == 'multi_task'")["trial_id"]
    )


def test_optuna_history_persists_in_a_journal(finished_study: tuple[Path, Path]) -> None:
    import optuna

    from study.run import journal_storage

    results, spec_path = finished_study
    spec, _ = load_spec(spec_path)
    journal = optuna.load_study(
        study_name="multi_task", storage=journal_storage(results.parent, spec.name)
    )
    trials = load_trials(results, where="kind == 'multi_task'")
    assert len(journal.trials) == len(trials) == 4
    told = {t.params["method"] for t in journal.trials}
    assert told == set(trials["method"])
    status = dict(zip(trials["trial_id"], trials["status"], strict=True))
    for told_trial in journal.trials:
        (trial_id,) = told_trial.user_attrs["trial_ids"]
        assert told_trial.user_attrs["config_id"] == trial_id
        # A trial ASHA stopped is PRUNED, with its per-epoch values; a finished one COMPLETE.
        pruned = told_trial.state == optuna.trial.TrialState.PRUNED
        assert pruned == (status[trial_id] == "stopped_early"), (told_trial, status)
        assert told_trial.state in (
            optuna.trial.TrialState.PRUNED,
            optuna.trial.TrialState.COMPLETE,
        )
        assert sorted(told_trial.intermediate_values) == list(
            range(1, 1 + len(told_trial.intermediate_values))
        )
        assert len(told_trial.intermediate_values) == (1 if pruned else spec.epochs)


def test_progress_lines_follow_each_phase(finished_study: tuple[Path, Path]) -> None:
    results, _ = finished_study
    baselines = [line for line in PROGRESS if line.startswith("[single_task]")]
    search = [line for line in PROGRESS if line.startswith("[multi_task]")]
    assert baselines[-1].startswith("[single_task] 2/2 done, 0 running, 0 failed")
    assert search[-1].startswith("[multi_task] 4/4 done, 0 running, 0 failed")
    best = load_trials(results, where="kind == 'multi_task'")["best_delta_m"].max()
    assert f"best Δm {best:+.2f} %" in search[-1]
    assert "elapsed" in search[-1] and "~0s left" in search[-1]
    done = [int(line.split("/")[0].split()[-1]) for line in search]
    assert done == sorted(done)  # counts only grow


def test_the_spec_is_stored_with_the_results(finished_study: tuple[Path, Path]) -> None:
    import yaml

    results, spec_path = finished_study
    spec, _ = load_spec(spec_path)
    stored = yaml.safe_load((results / "spec.yaml").read_text())
    assert stored == spec.model_dump(mode="json")


def test_each_trial_writes_tensorboard_events_under_the_stores_names(
    finished_study: tuple[Path, Path],
) -> None:
    """TensorBoard's own reader finds each trial's epochs under the history's names (and
    Tune's ``ray/tune/...`` ones), with the values the store holds."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    results, _ = finished_study
    history = load_history(results)
    trials = load_trials(results).set_index("trial_id")
    folders = {p.parent for p in (results / "tune").glob("*/*/events.out.tfevents.*")}
    assert len(folders) == len(trials)
    for folder in folders:
        events = EventAccumulator(str(folder))
        events.Reload()
        tags = set(events.Tags()["scalars"])
        (trial_id,) = [t for t in trials.index if f"_{t}_" in folder.name]
        rows = history[history["trial_id"] == trial_id]
        assert "ray/tune/val_loss" in tags
        for (split, task, metric), got in rows.groupby(["split", "task", "metric"]):
            scalars = events.Scalars(f"{split}/{task}/{metric}")
            assert [s.step for s in scalars] == list(got["epoch"])
            assert [s.value for s in scalars] == pytest.approx(list(got["value"]), rel=1e-6)
        if trials.loc[trial_id, "kind"] == "multi_task":
            assert {"val/semseg/miou", "val/depth/rmse", "train/semseg/weight"} <= tags
