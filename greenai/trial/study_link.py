"""A job's handle on its Optuna trial, through the study's shared storage.

The Optuna sweeper plugin asks and tells trials in the sweeping process; the job that trains
has no handle on the study, so it could not report per-epoch accuracy or be pruned. greenai's
sweeper passes each job its study name and trial number (`sweep.study_name`,
`sweep.trial_number`); the job reopens the trial from the storage, reports through it, records
a heartbeat after every epoch and tells the study its own result, so a result survives its
launcher. Outside an Optuna sweep the link is inactive and every call does nothing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.storages import BaseStorage

from greenai import names
from greenai.config import SweepConfig
from greenai.errors import GreenAIError, failure_reason
from greenai.stores.owner import owner_id
from greenai.stores.study_storage import make_storage, record_heartbeat, trial_id
from greenai.stores.url import StoreURL
from greenai.stores.waiting_storage import unless_away


def tell(study: optuna.Study, trial: optuna.trial.Trial | int, **result: Any) -> None:
    """study.tell that leaves finished trials alone (the job and the sweeper may both tell),
    minus GridSampler's complaint: once the grid is covered it calls Study.stop(), which Optuna
    only allows inside study.optimize; greenai's sweeper stops by itself."""
    try:
        study.tell(trial, skip_if_finished=True, **result)
    except RuntimeError as exc:
        if "Study.stop" not in str(exc):
            raise


def make_pruner(config: Any) -> optuna.pruners.BasePruner | None:
    """The pruner `sweep.pruner` describes (None: no pruning)."""
    if not config:
        return None
    from hydra.utils import instantiate

    return instantiate(config, _execution_whitelist_=("optuna.pruners.*",))


# A heartbeat at most this often: each is a database write, and the grace period is minutes.
HEARTBEAT_EVERY_SECONDS = 10.0


_STUDIES: dict[tuple[int, str, str], optuna.Study] = {}


def _load_study(name: str, storage: BaseStorage, pruner: optuna.pruners.BasePruner | None) -> optuna.Study:
    """The study, loaded once per process, storage and pruner (a fused batch opens many trials
    of one study). A random sampler: the job samples nothing, and it keeps loading cheap."""
    key = (id(storage), name, repr(pruner.__dict__) if pruner is not None else "")
    if key not in _STUDIES:
        _STUDIES[key] = optuna.load_study(
            study_name=name, storage=storage, sampler=optuna.samplers.RandomSampler(), pruner=pruner
        )
    return _STUDIES[key]


class StudyLink:
    def __init__(
        self,
        trial: optuna.trial.Trial | None = None,
        storage: BaseStorage | None = None,
        storage_id: int | None = None,
        pruner_active: bool = False,
        defer_tell: bool = False,
        live_energy: bool = False,
    ) -> None:
        self.trial = trial
        self.storage = storage
        self.storage_id = storage_id
        self.pruner_active = pruner_active
        # The energy spent so far after every epoch: only an energy budget reads it while the
        # trial runs (one write per epoch otherwise spent for nothing).
        self.live_energy = live_energy
        self._last_beat = -math.inf
        # Packed trials: their energy is attributed once the whole batch ends, so the sweeper,
        # not the job, tells the study how they ended.
        self.defer_tell = defer_tell

    @classmethod
    def for_job(cls, sweep: SweepConfig, launch_dir: str, defer_tell: bool = False) -> StudyLink:
        if sweep.trial_number is None or sweep.study_name is None:
            return cls()
        pruner = make_pruner(sweep.pruner)
        storage = make_storage(StoreURL.study(sweep.storage, launch_dir), sweep.heartbeat_grace_seconds)
        storage_id = trial_id(storage, sweep.study_name, sweep.trial_number)
        study = _load_study(sweep.study_name, storage, pruner)
        if storage.get_trial(storage_id).state.is_finished():
            # The sweeper gave this trial up (its launcher lost the job) before it started.
            raise GreenAIError(
                f"sweep.trial_number={sweep.trial_number}: the trial was closed before its job started; not running it"
            )
        single_objective = len(study.directions) == 1
        trial = optuna.trial.Trial(study, storage_id)
        link = cls(
            trial,
            storage,
            storage_id,
            pruner is not None and single_objective,
            defer_tell,
            live_energy=sweep.energy_budget_kj is not None,
        )
        link.beat()
        return link

    @property
    def active(self) -> bool:
        return self.trial is not None

    def attach(self, mlflow_run_id: str) -> None:
        """Name the trial's MLflow run and the process that trains it on the Optuna trial."""
        self._set(names.MLFLOW_RUN_ATTR, mlflow_run_id)
        self._set(names.JOB_OWNER_ATTR, owner_id())

    def beat(self) -> None:
        if (
            self.storage is None
            or self.storage_id is None
            or time.monotonic() - self._last_beat < HEARTBEAT_EVERY_SECONDS
        ):
            return
        record_heartbeat(self.storage, self.storage_id)
        self._last_beat = time.monotonic()

    def report(self, step: int, accuracy: float, energy_j: float | None = None) -> bool:
        """Record a heartbeat and the energy spent so far (the sweeper's budget counts running
        trials too), report the epoch's accuracy; whether the pruner says stop."""
        if self.trial is None:
            return False
        self.beat()
        if energy_j is not None and self.live_energy:
            self._set(names.ENERGY_ATTR, float(energy_j))
        if not self.pruner_active or accuracy != accuracy:  # NaN: nothing to report
            return False
        self.trial.report(accuracy, step)
        return unless_away(self.trial.should_prune, False)

    def record(self, metrics: Mapping[str, float | None]) -> None:
        """Keep the trial's figures on the Optuna trial too, as one attribute: the sweeper's stop
        rules read its accuracy and energy; the rest is for a reader of the study (optuna-dashboard)."""
        figures = {k: float(v) for k in names.RECORDED_METRICS if (v := metrics.get(k)) is not None and v == v}
        if figures:
            self._set(names.FIGURES_ATTR, figures)

    def finish(self, values: list[float] | None, exc: BaseException | None = None) -> None:
        """Tell the study how the trial ended, from the job itself: a result reaches the study
        even if the launcher or the sweeping process dies before it hears back."""
        if self.trial is None:
            return
        study = self.trial.study
        if exc is not None and not isinstance(exc, optuna.TrialPruned):
            self._set(names.FAILURE_ATTR, failure_reason(exc))
            # Stopped from outside (a signal, a store's disk full): its point runs again on resume.
            if isinstance(exc, KeyboardInterrupt) or getattr(exc, "trial_state", None) == "killed":
                self._set(names.INTERRUPTED_ATTR, True)
        if self.defer_tell:
            return
        if exc is None:
            tell(study, self.trial, values=values)
        elif isinstance(exc, optuna.TrialPruned):
            tell(study, self.trial, state=optuna.trial.TrialState.PRUNED)
        else:
            tell(study, self.trial, state=optuna.trial.TrialState.FAIL)

    def _set(self, key: str, value: Any) -> None:
        if self.trial is not None:
            self.trial.set_user_attr(key, value)
