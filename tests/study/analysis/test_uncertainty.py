"""SciPy's paired BCa bootstrap and the exact sign-flip permutation test, and the best-two
comparison, on hand-made repeats with hand-worked values."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import pytest

from study.analysis import compare_best_two, paired_bootstrap, paired_permutation


def test_paired_bootstrap_of_a_constant_difference_is_that_difference() -> None:
    mean, low, high = paired_bootstrap([3.0, 5.0, 7.0], [1.0, 3.0, 5.0])
    assert mean == low == high == 2.0


def test_paired_bootstrap_interval_holds_the_mean_and_spans_mixed_signs() -> None:
    mean, low, high = paired_bootstrap([1.0, -1.0, 2.0, -2.5], [0.0, 0.0, 0.0, 0.0])
    assert low < 0 < high and low <= mean <= high
    assert mean == pytest.approx(-0.125)


def test_with_three_seeds_the_bca_interval_is_every_resampled_mean() -> None:
    # Differences 1, 2, 3: a resample's mean lies in [1, 3], and the 95% BCa interval
    # reaches both ends, which is why three seeds only give a coarse interval.
    assert paired_bootstrap([1.0, 2.0, 3.0], [0.0, 0.0, 0.0]) == (2.0, 1.0, 3.0)


def test_the_sign_flip_permutation_test_is_exact() -> None:
    # 2^n sign flips; all positive differences: only the two flips all + and all −
    # reach |mean| = 2 or more, so p = 2 / 2^n.
    assert paired_permutation([1.0, 2.0, 3.0], [0.0] * 3) == pytest.approx(2 / 8)
    assert paired_permutation([1.0, 2.0, 3.0, 4.0, 5.0], [0.0] * 5) == pytest.approx(2 / 32)
    # 6, −1, 0: every flip keeping 6's sign has |mean| >= 5/3, and so does its mirror.
    assert paired_permutation([6.0, -1.0, 0.0], [0.0] * 3) == pytest.approx(1.0)
    assert paired_permutation([2.0, 2.0], [2.0, 2.0]) == 1.0


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
    text = comparison.describe()
    assert "paired BCa bootstrap (scipy.stats.bootstrap)" in text and "n = 3 seeds" in text
    assert comparison.p_value == pytest.approx(0.25)  # 1.0 on every seed: 2 of 8 flips
    assert "p = 0.25" in text and "permutation_test" in text
    assert comparison.coarse and "this interval is coarse" in text and "below 0.25" in text


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


def test_five_seeds_are_not_called_coarse(repeat_rows: Callable[..., list[dict]]) -> None:
    trials = pd.DataFrame(
        repeat_rows("a", "dwa", [2.0, 3.5, 4.0, 3.0, 5.0])
        + repeat_rows("c", "ew", [1.0, 2.0, 3.0, 2.5, 3.0])
    )
    comparison = compare_best_two(trials)
    assert comparison is not None and comparison.seeds == 5 and not comparison.coarse
    assert "coarse" not in comparison.describe()
    assert comparison.p_value == pytest.approx(2 / 32)  # every difference positive
