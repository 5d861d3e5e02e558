"""``mtlstudy run``'s exit status says how the study's multi-task trials ended."""

import pandas as pd
import pytest

from study.cli._study import EXIT_ALL_FAILED, EXIT_COMPLETED, EXIT_SOME_FAILED, exit_status


def _trials(*statuses: str, baselines: tuple[str, ...] = ()) -> pd.DataFrame:
    rows = [{"kind": "multi_task", "status": s} for s in statuses]
    rows += [{"kind": "single_task", "status": s} for s in baselines]
    return pd.DataFrame(rows)


@pytest.mark.parametrize(
    ("trials", "expected"),
    [
        (_trials("completed", "stopped_early"), EXIT_COMPLETED),
        (_trials("completed", "error"), EXIT_SOME_FAILED),
        (_trials("error", "error"), EXIT_ALL_FAILED),
        # A failed baseline alone does not fail the search's trials.
        (_trials("completed", baselines=("error",)), EXIT_COMPLETED),
        (_trials("error", baselines=("completed",)), EXIT_ALL_FAILED),
        (pd.DataFrame(), EXIT_COMPLETED),
    ],
)
def test_exit_status(trials: pd.DataFrame, expected: int) -> None:
    assert exit_status(trials) == expected


def test_the_statuses_differ() -> None:
    assert len({EXIT_COMPLETED, EXIT_ALL_FAILED, EXIT_SOME_FAILED, 2, 130}) == 5
