"""Where a trial checkpoints: the spec's interval, or the scheduler's decision points."""

import pytest

from study.run import checkpoint_epochs
from study.spec import StudySpec


def _spec(**fields: object) -> StudySpec:
    return StudySpec(name="c", tasks=["depth"], **fields)


@pytest.mark.parametrize(
    ("fields", "epochs", "expected"),
    [
        # ASHA's rungs 1, 2, 4, 8 (η = 2), every quarter (3), and the last.
        ({}, 12, {1, 2, 3, 4, 6, 8, 9, 12}),
        # The demo's: grace 2, η 2, 6 epochs.
        ({"scheduler": {"grace_period": 2, "reduction_factor": 2}}, 6, {2, 4, 6}),
        # A rung that is not a whole epoch is checkpointed at the epoch after it.
        ({"scheduler": {"grace_period": 1, "reduction_factor": 1.5}}, 4, {1, 2, 3, 4}),
        ({"scheduler": {"name": "hyperband"}}, 5, {1, 2, 3, 4, 5}),
        ({"scheduler": {"name": "fifo"}}, 100, {25, 50, 75, 100}),
        ({"scheduler": {"name": "median"}}, 3, {1, 2, 3}),
        ({"checkpoint_every": 3}, 10, {3, 6, 9, 10}),
        ({"checkpoint_every": 20, "scheduler": {"name": "hyperband"}}, 10, {10}),
        ({"checkpoint_every": 1}, 1, {1}),
    ],
)
def test_checkpoint_epochs(fields: dict, epochs: int, expected: set[int]) -> None:
    assert checkpoint_epochs(_spec(**fields), epochs) == expected


def test_a_zero_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="checkpoint_every"):
        _spec(checkpoint_every=0)
