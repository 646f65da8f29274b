"""A job's handle on its Optuna trial, through the study's shared storage.

The Optuna sweeper plugin asks and tells trials in the sweeping process; the job that trains
has no handle on the study, so it cannot report per-epoch accuracy or be pruned. greenai's
sweeper passes each job its study name and trial number (`sweep.study_name`,
`sweep.trial_number`); the job reopens the trial from the storage and reports through it.
Outside an Optuna sweep the link is inactive and every call does nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import optuna

from greenai.config import SweepConfig
from greenai.errors import GreenAIError
from greenai.job import JobContext
from greenai.locks import store_lock
from greenai.sweep.owner import owner_id
from greenai.sweep.patient_storage import patient, unless_away
from greenai.tracking import resolve_uri

log = logging.getLogger(__name__)

# User attributes greenai keeps on each Optuna trial.
ENERGY_ATTR = "energy_j"
ENERGY_SOURCE_ATTR = "energy_source"
MLFLOW_RUN_ATTR = "mlflow_run_id"
OWNER_ATTR = "greenai_owner"  # host:pid of the process that asked the trial
JOB_OWNER_ATTR = "greenai_job"  # host:pid of the process that trains it
FAILURE_ATTR = "failure_reason"
INTERRUPTED_ATTR = "interrupted"  # set on trials stopped by a signal: their point is run again
RETRY_ATTR = "retry_of"  # on a trial queued again for an interrupted one: that trial's number
RECORDED_METRICS = ("accuracy", "energy_j", "net_energy_j", "train_energy_j", "train_seconds", "busy_seconds", "epochs_run")


class Pruned(optuna.TrialPruned):
    """Raised in the job when the pruner stops a trial; MLflow records it as `pruned`."""

    trial_state = "pruned"


@dataclass(frozen=True)
class PrunedAt:
    """What a pruned job returns to greenai's sweeper (a value, so Hydra logs no error)."""

    epochs_run: int


# sqlite waits this long for another writer's lock before a call fails ("database is locked");
# greenai.store_waits then says once that it waits, and tries again up to its busy budget
# (GREENAI_STORE_BUSY_SECONDS, 120 s), so several workers can share one study file.
SQLITE_BUSY_SECONDS = 5


_STORAGES: dict[str, optuna.storages.BaseStorage] = {}


def make_storage(url: str) -> optuna.storages.BaseStorage:
    """The study storage for `url` (one per process): any SQLAlchemy URL, sqlite with a
    generous busy timeout, or `journal:///path/to/file.log` for Optuna's journal file (no
    server, shared folders). Created under the store's lock: workers starting together on a
    fresh database would otherwise race on creating its tables."""
    if url not in _STORAGES:
        with store_lock(url, "create"):
            _STORAGES[url] = patient(lambda: _new_storage(url), url)
    return _STORAGES[url]


def _new_storage(url: str) -> optuna.storages.BaseStorage:
    if url.startswith("journal:///"):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url[len("journal://") :]))
    if url.startswith("sqlite:"):
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": SQLITE_BUSY_SECONDS}})
    return optuna.storages.RDBStorage(url)


def study_trials(url: str, name: str) -> list[optuna.trial.FrozenTrial] | None:
    """The trials of the study `name` in the storage at `url`; None if there is no such study."""
    storage = make_storage(url)
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return None
    return storage.get_all_trials(study_id, deepcopy=False)


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


class StudyLink:
    def __init__(self, trial: optuna.trial.Trial | None = None, pruner_active: bool = False) -> None:
        self.trial = trial
        self.pruner_active = pruner_active

    @classmethod
    def for_job(cls, sweep: SweepConfig, job: JobContext) -> StudyLink:
        if sweep.trial_number is None or sweep.study_name is None:
            return cls()
        pruner = make_pruner(sweep.pruner)
        storage = make_storage(resolve_uri(sweep.storage, job.launch_dir))
        study_id = storage.get_study_id_from_name(sweep.study_name)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, sweep.trial_number)
        # A random sampler: the job samples nothing, and this keeps reopening the trial cheap.
        study = optuna.load_study(
            study_name=sweep.study_name, storage=storage, sampler=optuna.samplers.RandomSampler(), pruner=pruner
        )
        if storage.get_trial(trial_id).state.is_finished():
            # The sweeper gave this trial up (its launcher lost the job) before it started.
            raise GreenAIError(f"sweep.trial_number={sweep.trial_number}: the trial was closed before its job started; not running it")
        single_objective = len(study.directions) == 1
        return cls(optuna.trial.Trial(study, trial_id), pruner_active=pruner is not None and single_objective)

    @property
    def active(self) -> bool:
        return self.trial is not None

    @contextmanager
    def attached(self, mlflow_run_id: str) -> Iterator[StudyLink]:
        self._set(MLFLOW_RUN_ATTR, mlflow_run_id)
        self._set(JOB_OWNER_ATTR, owner_id())
        yield self

    def report(self, step: int, accuracy: float, energy_j: float | None = None) -> None:
        """Record the energy spent so far (the sweeper's budget counts running trials too) and
        report the epoch's accuracy; raise Pruned if the pruner says stop."""
        if self.trial is None:
            return
        if energy_j is not None:
            self._set(ENERGY_ATTR, float(energy_j))
        if not self.pruner_active or accuracy != accuracy:  # NaN: nothing to report
            return
        self.trial.report(accuracy, step)
        if unless_away(self.trial.should_prune, False):
            raise Pruned(f"pruned at step {step} (accuracy {accuracy:.4f})")

    def record(self, metrics: Mapping[str, float | None]) -> None:
        """Keep the trial's figures on the Optuna trial too: the sweeper sums energy from them."""
        for key in RECORDED_METRICS:
            value = metrics.get(key)
            if value is not None:
                self._set(key, float(value))

    def finish(self, values: list[float] | None, exc: BaseException | None = None) -> None:
        """Tell the study how the trial ended, from the job itself: a result reaches the study
        even if the launcher or the sweeping process dies before it hears back."""
        if self.trial is None:
            return
        study = self.trial.study
        if exc is None:
            tell(study, self.trial, values=values)
        elif isinstance(exc, optuna.TrialPruned):
            tell(study, self.trial, state=optuna.trial.TrialState.PRUNED)
        else:
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0].rstrip(": ")
            self._set(FAILURE_ATTR, reason)
            if isinstance(exc, KeyboardInterrupt):
                self._set(INTERRUPTED_ATTR, True)
            tell(study, self.trial, state=optuna.trial.TrialState.FAIL)

    def _set(self, key: str, value: Any) -> None:
        if self.trial is not None:
            self.trial.set_user_attr(key, value)
