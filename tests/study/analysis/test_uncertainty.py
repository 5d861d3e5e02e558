"""The paired bootstrap and the best-two comparison on hand-made repeats."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import pytest

from study.analysis import compare_best_two, paired_bootstrap


def test_paired_bootstrap_of_a_constant_difference_is_that_difference() -> None:
    mean, low, high = paired_bootstrap([3.0, 5.0, 7.0], [1.0, 3.0, 5.0])
    assert mean == low == high == 2.0


def test_paired_bootstrap_interval_holds_the_mean_and_spans_mixed_signs() -> None:
    mean, low, high = paired_bootstrap([1.0, -1.0, 2.0, -2.5], [0.0, 0.0, 0.0, 0.0])
    assert low < 0 < high and low <= mean <= high
    assert mean == pytest.approx(-0.125)


def test_the_best_two_methods_are_compared_seed_by_seed(
    repeat_rows: Callable[..., list[dict]],
) -> None:
    trials = pd.DataFrame(
        repeat_rows("a", "dwa", [2.0, 3.0, 4.0])
        + repeat_rows("b", "dwa", [0.0, 0.0, 0.0])  # dwa's worse configuration: not compared
        + repeat_rows("c", "ew", [1.0, 2.0, 3.0])
        + repeat_rows("d", "uw", [-5.0, -5.0, -5.0])
    )
    comparison = compare_best_two(trials)
    assert comparison is not None
    assert (comparison.best, comparison.second) == ("dwa (hard_sharing)", "ew (hard_sharing)")
    assert comparison.difference == 1.0 and comparison.seeds == 3
    assert comparison.survives  # the same 1.0 on every seed
    assert "paired bootstrap over seeds" in comparison.describe()


def test_a_lead_one_seed_gives_does_not_survive(repeat_rows: Callable[..., list[dict]]) -> None:
    trials = pd.DataFrame(
        repeat_rows("a", "dwa", [6.0, -1.0, 0.0]) + repeat_rows("c", "ew", [0.0, 0.0, 0.0])
    )
    comparison = compare_best_two(trials)
    assert comparison is not None and not comparison.survives
    assert "does not survive" in comparison.describe()


def test_no_comparison_without_two_methods_or_two_seeds(
    repeat_rows: Callable[..., list[dict]],
) -> None:
    assert compare_best_two(pd.DataFrame(repeat_rows("a", "dwa", [1.0, 2.0]))) is None
    one_seed = pd.DataFrame(repeat_rows("a", "dwa", [1.0]) + repeat_rows("c", "ew", [0.0]))
    assert compare_best_two(one_seed) is None
