from collections.abc import Callable

import pytest


@pytest.fixture
def repeat_rows() -> Callable[[str, str, list[float]], list[dict]]:
    """Trial rows of one configuration's repeats: ``(config, method, Δm per seed)``."""

    def rows(config: str, method: str, values: list[float]) -> list[dict]:
        return [
            {
                "trial_id": f"{config}{seed}",
                "config_id": config,
                "kind": "multi_task",
                "status": "completed",
                "method": method,
                "architecture": "hard_sharing",
                "seed": seed,
                "delta_m": value,
            }
            for seed, value in enumerate(values)
        ]

    return rows
