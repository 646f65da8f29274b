"""Optuna study storages for a `StoreURL`: sqlite, any SQLAlchemy database, or a journal file.

Database storages get Optuna's heartbeats: the job that trains a trial records one when it
starts and after every epoch, and the sweeper fails (and queues again, once) a trial whose
heartbeat is older than `sweep.heartbeat_grace_seconds` — a trial whose node died on another
host is not left RUNNING for ever. Optuna's journal storage has no heartbeats: there only the
process check of this host (`greenai.stores.owner`) finds dead trials, and a trial of another host
stays RUNNING until its job's launcher reports it lost.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage

# Optuna's heartbeat interface; the module is Optuna's own, its class not re-exported.
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial

from greenai import names
from greenai.stores.url import CREATE, StoreURL
from greenai.stores.waiting_storage import patient

log = logging.getLogger(__name__)


@contextlib.contextmanager
def deliberate_use() -> Iterator[None]:
    """greenai records heartbeats itself (jobs, per epoch) and fails stale trials itself (the
    sweeper), outside study.optimize: Optuna's warnings about that use, and about the heartbeat
    and metric-name APIs being experimental, would otherwise print on every ask."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        yield


# sqlite waits this long for another writer's lock before a call fails ("database is locked");
# greenai.stores.waits then says once that it waits, and tries again while other workers commit
# to the file, or up to its busy budget without a commit (GREENAI_STORE_BUSY_SECONDS, 120 s), so
# several workers can share one study file.
SQLITE_BUSY_SECONDS = 5
# Optuna only uses the interval inside study.optimize, which greenai does not call; jobs record
# heartbeats per epoch. Any positive value enables the heartbeat table.
HEARTBEAT_INTERVAL_SECONDS = 60

_STORAGES: dict[str, BaseStorage] = {}


def requeue_once(study: optuna.Study, trial: FrozenTrial) -> None:
    """A trial failed as stale (its job stopped beating) is queued again, once: its point was
    never evaluated. A retry that goes stale too is not retried again."""
    log.warning("trial %d: its job stopped recording heartbeats; marked failed", trial.number)
    if names.RETRY_ATTR in trial.user_attrs:
        return
    if any(t.user_attrs.get(names.RETRY_ATTR) == trial.number for t in study.get_trials(deepcopy=False)):
        return
    study.enqueue_trial(trial.params, user_attrs={names.RETRY_ATTR: trial.number})
    log.info("trial %d: its point is queued again", trial.number)


def make_storage(store: StoreURL, grace_seconds: int = 600) -> BaseStorage:
    """The study storage for `store` (one per process), created under the store's lock:
    workers starting together on a fresh database would otherwise race on creating its tables."""
    if store.url not in _STORAGES:
        with store.lock(CREATE), deliberate_use():
            # A database that is locked or away is waited for (greenai.stores.waiting_storage).
            _STORAGES[store.url] = patient(lambda: _new_storage(store, grace_seconds), store)
    return _STORAGES[store.url]


def _new_storage(store: StoreURL, grace_seconds: int) -> BaseStorage:
    if store.kind == "journal":
        from optuna.storages.journal import JournalFileBackend

        return JournalStorage(JournalFileBackend(str(store.path)))
    engine = {"connect_args": {"timeout": SQLITE_BUSY_SECONDS}} if store.kind == "sqlite" else None
    return RDBStorage(
        store.url,
        engine_kwargs=engine,
        heartbeat_interval=HEARTBEAT_INTERVAL_SECONDS,
        grace_period=max(1, int(grace_seconds)),
        heartbeat_stale_trial_callback=requeue_once,
    )


def study_trials(storage: BaseStorage, name: str) -> list[FrozenTrial] | None:
    """The trials of the study `name`; None if there is no such study."""
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return None
    return storage.get_all_trials(study_id, deepcopy=False)


def trial_id(storage: BaseStorage, study_name: str, number: int) -> int:
    """The storage's id of trial `number` of a study, through the storage's public API."""
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study_name), number)


def record_heartbeat(storage: BaseStorage, trial: int) -> None:
    """Tell the storage the job of `trial` (its storage id) is alive; nothing where the storage
    keeps no heartbeats (journal files)."""
    if isinstance(storage, BaseHeartbeat):
        storage.record_heartbeat(trial)
