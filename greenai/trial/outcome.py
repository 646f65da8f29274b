"""How a trial ended, as a value: `Finished` (its objective values), `PrunedAt` (the pruner
stopped it) or `Failed` (the error that failed it). The runner returns one per trial, the
records close with it, and `job_return` turns it into what the Hydra job gives the sweeper."""

from __future__ import annotations

import math
from dataclasses import dataclass

import optuna


class Pruned(optuna.TrialPruned):
    """What ended a pruned trial, as MLflow's and Optuna's records read it (`pruned`)."""

    trial_state = "pruned"  # read by stores.tracking.end_state


@dataclass(frozen=True)
class Finished:
    # Accuracy, and energy for two objectives (None while not yet known: a packed trial's
    # energy is attributed after its batch).
    values: tuple[float | None, ...]

    @property
    def ending(self) -> None:
        return None


@dataclass(frozen=True)
class PrunedAt:
    """Also what a pruned job returns to greenai's sweeper (a value, so Hydra logs no error)."""

    epochs_run: int

    @property
    def ending(self) -> Pruned:
        return Pruned(f"pruned after {self.epochs_run} epochs")


@dataclass(frozen=True)
class Failed:
    error: BaseException

    @property
    def ending(self) -> BaseException:
        return self.error


Outcome = Finished | PrunedAt | Failed


def job_return(outcome: Outcome) -> float | tuple[float, float] | PrunedAt:
    """What the job returns to the sweeper: accuracy, or (accuracy, energy), an energy not yet
    known as NaN (the sweeper replaces it by the attributed figure); PrunedAt; a failure is raised."""
    if isinstance(outcome, Failed):
        raise outcome.error
    if isinstance(outcome, PrunedAt):
        return outcome
    returned = [math.nan if v is None else float(v) for v in outcome.values]
    return returned[0] if len(returned) == 1 else (returned[0], returned[1])
