"""How the search bench configures its strategies, apart from the bench so the CLI can
show the defaults without importing Ray and Optuna."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Levers"]


@dataclass(frozen=True)
class Levers:
    """How the strategies are configured: ASHA's rungs (``tpe+asha`` only) and TPE's
    sampler (both TPE strategies). Every strategy gets the same space, budget and data
    whatever these are."""

    #: ASHA's first rung, in epochs: no trial is stopped before it.
    grace_period: int = 1
    #: ASHA keeps the top 1/``reduction_factor`` of the trials at each rung.
    reduction_factor: float = 2.0
    #: TPE's random start-up trials (the same configurations random search draws first).
    startup_trials: int = 10
    #: TPE's joint density over the parameters (grouped by the conditional space).
    multivariate: bool = False
    #: TPE counts running trials as bad ones so concurrent trials spread out.
    constant_liar: bool = False

    def check(self, epochs: int) -> None:
        if not 1 <= self.grace_period <= epochs:
            raise ValueError(
                f"grace period {self.grace_period}: expected 1 to the trial's {epochs} epochs"
            )
        if not self.reduction_factor > 1:
            raise ValueError(f"reduction factor {self.reduction_factor}: expected more than 1")
        if self.startup_trials < 1:
            raise ValueError(f"startup trials {self.startup_trials}: expected at least 1")
