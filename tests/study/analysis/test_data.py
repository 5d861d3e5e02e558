"""Each plot's data equals the store's data, computed here independently of the package."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from study.analysis import (
    PlotDataError,
    curves_data,
    heatmap_data,
    load_results,
    parallel_data,
    pareto_data,
    pareto_front,
    rank_table,
    ranks_data,
    weights_data,
)
from study.analysis._data import data_key
from study.store import load

# The store conftest.py builds.
ARCHS = ("hard_sharing", "rcm_resnet")
METHODS = ("ew", "dwa", "amtl")
SEEDS = (0, 1)
TASKS = ("semseg", "depth")
HEADLINE = {"semseg": ("miou", True), "depth": ("rmse", False)}


@pytest.fixture(scope="module")
def trials(store: Path) -> pd.DataFrame:
    return load(store, "trials")


@pytest.fixture(scope="module")
def history(store: Path) -> pd.DataFrame:
    return load(store, "history")


def _completed(trials: pd.DataFrame) -> pd.DataFrame:
    return trials[(trials["kind"] == "multi_task") & (trials["status"] == "completed")]


def _dominated(points: list[tuple[float, float]], i: int) -> bool:
    x, y = points[i]
    return any(
        (xo <= x and yo >= y) and (xo < x or yo > y) for j, (xo, yo) in enumerate(points) if j != i
    )


def test_pareto_points_are_the_completed_trials_and_the_front_is_non_dominated(
    trials: pd.DataFrame,
) -> None:
    data = pareto_data(trials, x="gflops", y="delta_m")
    expected = _completed(trials)[["trial_id", "gflops", "delta_m"]]
    got = data.set_index("trial_id").sort_index()
    want = expected.set_index("trial_id").sort_index()
    assert list(got.index) == list(want.index)  # no stopped, running or failed trial
    np.testing.assert_allclose(got["x"], want["gflops"])
    np.testing.assert_allclose(got["y"], want["delta_m"])
    points = list(zip(got["x"], got["y"], strict=True))
    front = [not _dominated(points, i) for i in range(len(points))]
    assert list(got["on_front"]) == front
    assert 1 <= sum(front) < len(front)
    assert set(got["method"]) == set(METHODS) and set(got["architecture"]) == set(ARCHS)


def test_pareto_points_of_repeated_configurations_are_their_means(
    trials: pd.DataFrame,
) -> None:
    # Two seeds of one configuration become one point at their mean, with their spread.
    done = _completed(trials)
    first, second = done.index[:2]
    repeated = trials.copy()
    repeated["config_id"] = repeated["trial_id"]
    repeated.loc[second, "config_id"] = repeated.loc[first, "config_id"]
    repeated.loc[second, ["method", "architecture"]] = repeated.loc[
        first, ["method", "architecture"]
    ]
    data = pareto_data(repeated).set_index("config_id")
    assert len(data) == len(done) - 1
    pair = done.loc[[first, second]]
    point = data.loc[repeated.loc[first, "config_id"]]
    assert point["seeds"] == 2
    assert point["x"] == pytest.approx(pair["gflops"].mean())
    assert point["y"] == pytest.approx(pair["delta_m"].mean())
    assert point["y_std"] == pytest.approx(pair["delta_m"].std(ddof=1))
    assert data.drop(index=point.name)["y_std"].isna().all()


def test_pareto_on_parameters_in_millions_and_a_lower_is_better_metric(
    trials: pd.DataFrame,
) -> None:
    data = pareto_data(trials, x="params", y="final.depth.rmse").set_index("trial_id")
    want = _completed(trials).set_index("trial_id").loc[data.index]
    np.testing.assert_allclose(data["x"], want["params"] / 1e6)
    np.testing.assert_allclose(data["y"], want["final.depth.rmse"])
    # Lower RMSE is better: a point is on the front unless another is cheaper and lower.
    points = list(zip(data["x"], -data["y"], strict=True))
    assert list(data["on_front"]) == [not _dominated(points, i) for i in range(len(points))]
    assert data.attrs["x"] == "params_m" and data.attrs["higher_is_better"] is False


def test_pareto_front_keeps_ties_and_drops_dominated_points() -> None:
    x = [1.0, 1.0, 2.0, 2.0, 3.0, 0.5]
    y = [5.0, 5.0, 6.0, 4.0, 6.0, 1.0]
    assert list(pareto_front(x, y)) == [True, True, True, False, False, True]
    assert list(pareto_front(x, y, higher_y=False)) == [False, False, False, False, False, True]


def test_heatmap_cell_is_the_mean_over_seeds_of_each_seeds_best_trial(
    trials: pd.DataFrame,
) -> None:
    cells = heatmap_data(trials)
    # Seeds of one data setting are pooled, although their dataset keys differ.
    assert cells["data_key"].nunique() == 1 and len(cells) == len(ARCHS) * len(METHODS)
    done = _completed(trials)
    for _, cell in cells.iterrows():
        rows = done[
            (done["architecture"] == cell["architecture"]) & (done["method"] == cell["method"])
        ]
        best = rows.groupby("seed")["delta_m"].max()
        assert cell["seeds"] == len(SEEDS) == len(best)
        assert cell["trials"] == len(rows)
        assert cell["mean"] == pytest.approx(best.mean())
        assert cell["std"] == pytest.approx(np.std(best.to_numpy(), ddof=1))
    worse = cells[(cells["architecture"] == "hard_sharing") & (cells["method"] == "dwa")]
    assert int(worse["trials"].iloc[0]) == 3  # the worse second trial is not averaged in


def test_data_key_drops_only_the_seed() -> None:
    assert data_key("synthetic:32px:5c:64+16:4obj:seed3") == "synthetic:32px:5c:64+16:4obj"
    assert data_key("synthetic:32px:seed12:semseg/8+2") == "synthetic:32px:semseg/8+2"
    assert data_key("nyud:/data/NYUD_MT:480px") == "nyud:/data/NYUD_MT:480px"


def _runs(trials: pd.DataFrame) -> pd.DataFrame:
    runs = trials[
        (trials["kind"] == "multi_task") & trials["status"].isin(["completed", "stopped_early"])
    ]
    return runs[["study", "trial_id", "method"]]


def test_curves_are_the_headline_validation_rows_of_completed_and_stopped_trials(
    trials: pd.DataFrame, history: pd.DataFrame
) -> None:
    data = curves_data(trials, history)
    headline = {t: m for t, (m, _) in HEADLINE.items()}
    rows = history[(history["split"] == "val") & (history["task"].isin(list(TASKS)))]
    rows = rows[rows["metric"] == rows["task"].map(headline)]
    want = rows.merge(_runs(trials), on=["study", "trial_id"])
    key = ["trial_id", "task", "epoch"]
    got = data.sort_values(key).reset_index(drop=True)
    want = want.sort_values(key).reset_index(drop=True)
    assert len(got) == len(want) > 0
    pd.testing.assert_frame_equal(
        got[[*key, "metric", "method", "value"]], want[[*key, "metric", "method", "value"]]
    )
    assert "x-stopped" in set(got["trial_id"])
    assert not {"x-running", "x-error", "b-har0-depth"} & set(got["trial_id"])
    assert list(dict.fromkeys(data["task"])) == list(TASKS)  # the trials' task order


def test_weights_are_the_train_weight_and_achievement_rows(
    trials: pd.DataFrame, history: pd.DataFrame
) -> None:
    data = weights_data(trials, history)
    wanted = history["metric"].isin(["weight", "achievement"])
    rows = history[(history["split"] == "train") & wanted]
    want = rows.merge(_runs(trials), on=["study", "trial_id"])
    assert set(data[data["metric"] == "achievement"]["method"]) == {"amtl"}
    key = ["trial_id", "task", "metric", "epoch"]
    got = data.sort_values(key).reset_index(drop=True)
    want = want.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(got[[*key, "value"]], want[[*key, "value"]])
    assert set(got["method"]) == set(METHODS)


def _expected_ranks(trials: pd.DataFrame) -> pd.DataFrame:
    done = _completed(trials)
    records = []
    for arch in ARCHS:
        for task, (metric, higher) in HEADLINE.items():
            column = f"final.{task}.{metric}"
            scores = {}
            for method in METHODS:
                rows = done[(done["architecture"] == arch) & (done["method"] == method)]
                per_seed = [
                    (
                        rows[rows["seed"] == s][column].max()
                        if higher
                        else rows[rows["seed"] == s][column].min()
                    )
                    for s in SEEDS
                ]
                scores[method] = float(np.mean(per_seed))
            ordered = sorted(scores, key=lambda m: -scores[m] if higher else scores[m])
            for rank, method in enumerate(ordered, start=1):
                records.append(
                    {
                        "architecture": arch,
                        "task": task,
                        "method": method,
                        "value": scores[method],
                        "rank": float(rank),
                    }
                )
    return pd.DataFrame(records)


def test_ranks_per_task_and_setting_then_mean(trials: pd.DataFrame) -> None:
    want = _expected_ranks(trials)
    table = rank_table(trials)
    key = ["architecture", "task", "method"]
    got = table.sort_values(key).reset_index(drop=True)
    want = want.sort_values(key).reset_index(drop=True)
    np.testing.assert_allclose(got["value"], want["value"])
    np.testing.assert_allclose(got["rank"], want["rank"])
    summary = ranks_data(trials).set_index("method")
    means = want.groupby("method")["rank"].mean()
    np.testing.assert_allclose(summary.loc[means.index, "mean_rank"], means)
    assert (summary["settings"] == len(ARCHS) * len(TASKS)).all()
    assert list(summary["mean_rank"]) == sorted(summary["mean_rank"])


def test_ranks_need_two_methods(trials: pd.DataFrame) -> None:
    with pytest.raises(PlotDataError, match="two methods"):
        ranks_data(trials[trials["method"] != "dwa"][lambda f: f["method"] != "ew"])


def test_parallel_positions_are_the_scaled_hyperparameters(trials: pd.DataFrame) -> None:
    data = parallel_data(trials)
    runs = trials[
        (trials["kind"] == "multi_task") & trials["status"].isin(["completed", "stopped_early"])
    ].set_index("trial_id")
    assert set(data["trial_id"]) == set(runs.index)
    per_trial = data.drop_duplicates("trial_id").set_index("trial_id")
    np.testing.assert_allclose(per_trial["color"], runs.loc[per_trial.index, "delta_m"])
    # Axes: the method first, then the optimiser, the model, and each method's own.
    params = list(data.drop_duplicates("axis").sort_values("axis")["param"])
    assert params[:4] == ["method", "optim.lr", "optim.weight_decay", "model.head_channels"]
    assert set(params[4:]) == {"dwa.temperature", "amtl.margin", "amtl.gamma"}
    lr = data[data["param"] == "optim.lr"].set_index("trial_id")
    values = runs.loc[lr.index, "hp.optim.lr"]
    assert (lr["scale"] == "log").all()  # a span of more than 10×
    logs = np.log10(values)
    np.testing.assert_allclose(lr["position"], (logs - logs.min()) / (logs.max() - logs.min()))
    np.testing.assert_allclose(lr["value"], values)
    method = data[data["param"] == "method"].set_index("trial_id")
    assert dict(zip(method["label"], method["position"], strict=True)) == {
        "amtl": 0.0,
        "dwa": 0.5,
        "ew": 1.0,
    }
    temperature = data[data["param"] == "dwa.temperature"]
    assert set(temperature["method"]) == {"dwa"}  # only the trials that have it
    assert (temperature["scale"] == "linear").all()


def test_plots_that_need_delta_m_say_so(trials: pd.DataFrame) -> None:
    without = trials.drop(columns=["delta_m"])
    for make in (pareto_data, heatmap_data, parallel_data):
        with pytest.raises(PlotDataError, match="no .*'delta_m'.*baselines"):
            make(without)


def test_no_multi_task_trial_is_one_clear_error(trials: pd.DataFrame) -> None:
    single = trials[trials["kind"] == "single_task"]
    with pytest.raises(PlotDataError, match="no multi-task trial"):
        pareto_data(single)
    with pytest.raises(PlotDataError, match="history"):
        curves_data(trials, pd.DataFrame())


def test_load_results_reads_only_the_rows_the_plots_draw(store: Path) -> None:
    results = load_results(store)
    assert set(results.history["split"]) == {"val", "train"}
    assert set(results.history[results.history["split"] == "train"]["metric"]) == {
        "weight",
        "achievement",
    }
    assert {d.name for d in results.study_dirs} == {f"{a}-seed{s}" for a in ARCHS for s in SEEDS}
