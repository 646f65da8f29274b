"""An Optuna storage that waits for its database instead of failing the trial.

Every call goes through greenai.stores.waits: one that fails because the sqlite file is locked
by another process, or because the database server does not answer (PostgreSQL restarting),
is tried again until the store answers or its budget runs out. The per-epoch writes of a
training job (user attributes such as energy_j, intermediate values) do not wait while the
database is away: they are kept in order and sent before the next call that must reach the
database, so training goes on and the trial's result is told, once, when the database is back.
A full disk is not waited for: the call fails at once with StoreFull, naming the store.
"""

from __future__ import annotations

import abc
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import TrialState

from greenai.stores import waits as store_waits
from greenai.stores.url import STUDY_KEY, StoreURL
from greenai.stores.waits import fault_of

T = TypeVar("T")
# Written each epoch by a training job and read only by the sweeper's budget and the pruner:
# they can wait in memory while the database is away.
KEPT_WHILE_AWAY = frozenset({"set_trial_user_attr", "set_trial_intermediate_value"})
# While writes are kept, how often a new write knocks at the database again.
RETRY_SECONDS = 5.0

_hasty = threading.local()


class _Away(Exception):
    """A call made through unless_away found the database busy or away."""


def unless_away(call: Callable[[], T], default: T) -> T:
    """call(), or `default` at once where the study's database is busy or away: a pruning check
    can wait for the next epoch; training need not wait for the database."""
    _hasty.on = True
    try:
        return call()
    except _Away:
        return default
    finally:
        _hasty.on = False


class PatientStorage(BaseStorage):
    """Wraps the storage Optuna would use for `url` (its RDB storage behind Optuna's cache, or a
    journal storage); every BaseStorage method is delegated (see the loop after the class)."""

    def __init__(self, inner: BaseStorage, store: StoreURL) -> None:
        self._inner = inner
        self._store = store
        self._kept: list[tuple[str, tuple[Any, ...]]] = []
        self._next_try = 0.0
        self._lock = threading.RLock()

    def __reduce__(self) -> tuple[Any, ...]:
        return (PatientStorage, (self._inner, self._store))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "_inner":
            raise AttributeError(name)
        return getattr(self._inner, name)

    # ------------------------------------------------------------ calls

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if name in KEPT_WHILE_AWAY and not kwargs:
            return self._write_or_keep(name, args)
        with self._lock:
            if getattr(_hasty, "on", False):
                return self._once(lambda: self._send_kept_then(name, args, kwargs))
            return store_waits.retry(lambda: self._send_kept_then(name, args, kwargs), self._store)

    def _send_kept_then(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        self._send_kept()
        return getattr(self._inner, name)(*args, **kwargs)

    def _once(self, call: Callable[[], T]) -> T:
        try:
            result = call()
        except Exception as exc:
            store_waits.passing_fault(exc, self._store)  # a full disk is not worth waiting for: the trial ends
            raise _Away() from None
        store_waits.answered(self._store)
        return result

    def _write_or_keep(self, name: str, args: tuple[Any, ...]) -> None:
        with self._lock:
            if not self._kept:
                try:
                    # A locked sqlite file is waited for, as any call; only "away" keeps writes.
                    store_waits.retry(lambda: getattr(self._inner, name)(*args), self._store, ("busy",))
                    return
                except Exception as exc:
                    self._keep(name, args, store_waits.passing_fault(exc, self._store, ("away",)))
                    return
            self._keep(name, args, None)
            if time.monotonic() >= self._next_try:
                try:
                    self._send_kept()
                except Exception as exc:
                    store_waits.passing_fault(exc, self._store)
                    self._next_try = time.monotonic() + RETRY_SECONDS
                    return
                store_waits.answered(self._store)

    def _keep(self, name: str, args: tuple[Any, ...], fault: store_waits.Fault | None) -> None:
        if name == "set_trial_user_attr":  # only the newest value of an attribute matters
            self._kept = [k for k in self._kept if not (k[0] == name and k[1][:2] == args[:2])]
        self._kept.append((name, args))
        if fault is not None:
            store_waits.waiting(self._store, fault, keeping=True)
            self._next_try = time.monotonic() + RETRY_SECONDS

    def _send_kept(self) -> None:
        """Send the kept writes, oldest first; a fault leaves the rest kept and is raised."""
        while self._kept:
            name, args = self._kept[0]
            try:
                getattr(self._inner, name)(*args)
            except UpdateFinishedTrialError:
                pass  # the trial was closed meanwhile (its job lost): the write no longer applies
            except Exception as exc:
                if fault_of(exc) is None:
                    self._kept.pop(0)  # a write the store refuses is not kept to block the others
                raise
            self._kept.pop(0)

    # ------------------------------------------------------------ telling, exactly once

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Any = None) -> bool:
        attempts = 0

        def tell() -> bool:
            nonlocal attempts
            attempts += 1
            try:
                return self._inner.set_trial_state_values(trial_id, state, values)
            except UpdateFinishedTrialError:
                # An earlier attempt was committed, but the connection dropped before its answer.
                if attempts > 1 and _landed(self._inner.get_trial(trial_id), state, values):
                    return True
                raise

        with self._lock:
            if getattr(_hasty, "on", False):
                return self._once(lambda: (self._send_kept(), tell())[1])
            return store_waits.retry(lambda: (self._send_kept(), tell())[1], self._store)


def _landed(trial: optuna.trial.FrozenTrial, state: TrialState, values: Any) -> bool:
    return trial.state == state and (values is None or list(trial.values or []) == [float(v) for v in values])


def _delegate(name: str) -> Callable[..., Any]:
    def method(self: PatientStorage, *args: Any, **kwargs: Any) -> Any:
        return self._call(name, *args, **kwargs)

    method.__name__ = name
    return method


for _name in sorted(
    BaseStorage.__abstractmethods__
    | {
        "get_trial_id_from_study_id_trial_number",
        "get_best_trial",
        "get_n_trials",
        "get_trial_number_from_id",
        "remove_session",
    }
):
    if _name != "set_trial_state_values":
        setattr(PatientStorage, _name, _delegate(_name))
abc.update_abstractmethods(PatientStorage)


class PatientHeartbeatStorage(PatientStorage, BaseHeartbeat):
    """A PatientStorage over a database storage that keeps heartbeats: Optuna finds stale trials
    only through BaseHeartbeat's methods, delegated here like the others."""

    def record_heartbeat(self, trial_id: int) -> None:
        self._call("record_heartbeat", trial_id)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        return self._call("_get_stale_trial_ids", study_id)

    def get_heartbeat_interval(self) -> int | None:
        return self._inner.get_heartbeat_interval()

    def get_heartbeat_stale_trial_callback(self) -> Callable[..., None] | None:
        return self._inner.get_heartbeat_stale_trial_callback()


def patient(make: Callable[[], BaseStorage], store: StoreURL) -> PatientStorage:
    """The storage `make` opens, as Optuna would use it (its cache around an RDB storage),
    waiting for its database while opening it too."""
    store = store.keyed(STUDY_KEY)
    opened = optuna.storages.get_storage(store_waits.retry(make, store))
    kind = PatientHeartbeatStorage if isinstance(opened, BaseHeartbeat) else PatientStorage
    return kind(opened, store)
