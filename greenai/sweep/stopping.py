"""When a sweep stops before `n_trials`: the grid is exhausted, the energy budget is spent, the
accuracy target is reached; and when too many failures abort it."""

from __future__ import annotations

from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from greenai.config import SweepConfig
from greenai.sweep.study import SweepStudy


def stop_reason(sweep: SweepConfig, study: SweepStudy) -> str | None:
    """Why no new trial should start, or None. Checked before each batch."""
    sampler = study.study.sampler
    waiting = study.count(TrialState.WAITING) > 0
    if isinstance(sampler, optuna.samplers.GridSampler) and sampler.is_exhausted(study.study) and not waiting:
        return "every grid point has been tried"
    if sweep.energy_budget_kj is not None:
        spent = study.spent_j() / 1000
        if spent >= sweep.energy_budget_kj:
            return f"energy budget of {sweep.energy_budget_kj} kJ reached ({spent:.3f} kJ spent)"
    if sweep.target_accuracy is not None:
        best = study.best_accuracy()
        if best is not None and best >= sweep.target_accuracy:
            return f"target accuracy {sweep.target_accuracy} reached ({best:.4f})"
    return None


@dataclass
class FailureBudget:
    """Failed trials allowed over the whole sweep: `max_failure_rate` x `n_trials`."""

    max_failure_rate: float
    n_trials: int
    failures: int = 0

    def add(self, failed: int) -> None:
        self.failures += failed

    @property
    def exceeded(self) -> bool:
        return self.failures > self.max_failure_rate * self.n_trials

    def message(self) -> str:
        return (
            f"{self.failures} trials failed, more than max_failure_rate={self.max_failure_rate} "
            f"x n_trials={self.n_trials} allows"
        )
