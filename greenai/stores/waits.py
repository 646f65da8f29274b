"""Waiting for a store that is busy or away, the same way for every store greenai writes.

A store call that fails because another process holds the sqlite file's write lock ("busy"),
or because the database server does not answer ("away"), is tried again with backoff. The
first failure of an episode says once what greenai waits for and since when, the first success
after it says the store answers again, and past the budget one line names the store
(StoreUnavailable). The busy budget is for a lock that is stuck: while the store's file keeps
changing (its holder commits), a worker sharing it waits, however long the holder works.
A full disk ("full") is never waited for: it does not get better by itself, so the call fails
at once with StoreFull, one line naming the store and the file. Other errors (a bad value) are
raised as they are.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from greenai.errors import GreenAIError, StoreFull, StoreUnavailable, causes
from greenai.stores.redaction import redact
from greenai.stores.url import StoreURL

log = logging.getLogger(__name__)
T = TypeVar("T")

# How long greenai waits for a sqlite file another process keeps locked, and for a database
# server that does not answer (PostgreSQL restarting): environment variables, so every job of
# a sweep (joblib, Slurm) inherits them from the command.
BUSY_SECONDS_ENV = "GREENAI_STORE_BUSY_SECONDS"
AWAY_SECONDS_ENV = "GREENAI_STORE_AWAY_SECONDS"
DEFAULT_SECONDS = {"busy": 120.0, "away": 900.0}
MAX_DELAY_SECONDS = 5.0


@dataclass(frozen=True)
class Fault:
    kind: str  # "busy", "away" or "full"
    detail: str
    file: str | None = None  # the file a full disk refused, where the error names it


# A full disk, as each layer says it: the OS (ENOSPC; EDQUOT, a quota), sqlite (SQLITE_FULL),
# PostgreSQL (SQLSTATE 53100, disk_full), and servers that pass the OS's words on (MySQL).
FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
FULL_TEXTS = ("database or disk is full", "No space left on device", "Disk quota exceeded")
DISK_FULL_SQLSTATE = "53100"


def _full(chain: list[BaseException]) -> Fault | None:
    """The OS's or the database's own word first (its error code), then their words in a
    message; greenai's own one lines, which may quote those words, are not read."""
    errors = [e for e in chain if not isinstance(e, GreenAIError)]
    for error in errors:
        if isinstance(error, OSError) and error.errno in FULL_ERRNOS:
            filename = error.filename if isinstance(error.filename, str) else None
            return Fault("full", error.strerror or os.strerror(error.errno), filename)
        # SQLAlchemy keeps the driver's error as .orig (psycopg: sqlstate, psycopg2: pgcode).
        for driver in (error, getattr(error, "orig", None)):
            if DISK_FULL_SQLSTATE in (getattr(driver, "pgcode", None), getattr(driver, "sqlstate", None)):
                return Fault("full", redact((str(driver).strip().splitlines() or ["disk full"])[0])[:160])
    for error in errors:
        text = str(error)
        found = next((phrase for phrase in FULL_TEXTS if phrase in text), None)
        if found:
            return Fault("full", found)
    return None


def fault_of(exc: BaseException) -> Fault | None:
    """Busy (a sqlite lock held elsewhere), away (a database server that does not answer) or
    full (the disk under the store), or None for any other error. Libraries wrap the driver's
    error (Optuna's StorageInternalError, MLflow's MlflowException), so the whole chain of
    causes is read; a full disk anywhere in it wins, as nothing else is worth waiting for then."""
    from sqlalchemy import exc as sa

    if isinstance(exc, (StoreUnavailable, StoreFull)):
        return None  # greenai gave up on the store already: not waited for again
    full = _full(list(causes(exc)))
    if full is not None:
        return full
    for error in causes(exc):
        text = str(error)
        if "database is locked" in text or "database table is locked" in text:
            return Fault("busy", "locked by another process")
        if isinstance(error, sa.DBAPIError) and not type(error.orig).__module__.startswith("sqlite3"):
            if error.connection_invalidated or isinstance(error, (sa.OperationalError, sa.InterfaceError)):
                lines = str(error.orig).strip().splitlines() or [type(error.orig).__name__]
                return Fault("away", f"the database does not answer ({redact(lines[0])[:160]})")
    return None


def _env(kind: str) -> str:
    return BUSY_SECONDS_ENV if kind == "busy" else AWAY_SECONDS_ENV


class QuietWhileWaiting(logging.Filter):
    """Drops a library's own report of a locked sqlite file or a full disk (MLflow logs each
    failed attempt at ERROR, with a traceback): greenai says once that it waits, and names the
    store if it stops."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage() + (str(record.exc_info[1]) if record.exc_info else "")
        return "database is locked" not in text and not any(phrase in text for phrase in FULL_TEXTS)


def budget_seconds(kind: str) -> float:
    try:
        return max(0.0, float(os.environ.get(_env(kind), DEFAULT_SECONDS[kind])))
    except ValueError:
        return DEFAULT_SECONDS[kind]


# A store file's companions that change when a writer commits: sqlite's rollback journal or
# write-ahead log (not -shm, which readers change too).
COMMIT_TRACES = ("", "-journal", "-wal")


def file_marks(store: StoreURL) -> tuple[tuple[int, int] | None, ...] | None:
    """What a commit to the store's file changes (modification time and size of the file and its
    journal or WAL); None for a store that is no local file."""
    if store.file is None:
        return None
    marks = []
    for suffix in COMMIT_TRACES:
        try:
            stat = os.stat(store.file + suffix)
        except OSError:
            marks.append(None)
            continue
        marks.append((stat.st_mtime_ns, stat.st_size))
    return tuple(marks)


@dataclass
class _Episode:
    fault: Fault
    since: float  # when the first failing call began (time.monotonic)
    moved_at: float  # when the store was last seen to move, its holder committing (time.monotonic)
    marks: tuple[tuple[int, int] | None, ...] | None = None
    given_up_at: float | None = None

    def stalled(self, store: StoreURL) -> float:
        """Seconds the store has not moved (for a fault that is no busy file: since the episode
        began): a file its holder keeps committing to is busy, not stuck."""
        now, marks = time.monotonic(), file_marks(store) if self.fault.kind == "busy" else None
        if marks is not None and self.marks is not None and marks != self.marks:
            self.moved_at = now
        self.marks = marks
        return now - self.moved_at

    @property
    def clock(self) -> str:
        """When the episode began, as the console's clock says it."""
        return time.strftime("%H:%M:%S", time.localtime(time.time() - (time.monotonic() - self.since)))


_EPISODES: dict[str, _Episode] = {}
_GUARD = threading.Lock()


def waiting(store: StoreURL, fault: Fault, keeping: bool = False, began: float | None = None) -> _Episode:
    """The store's waiting episode, begun (and said, once) if none is open; `began`: when the
    call that failed started (it may have waited in the driver first)."""
    with _GUARD:
        episode = _EPISODES.get(store.label)
        if episode is None:
            now = time.monotonic()
            episode = _EPISODES[store.label] = _Episode(fault, min(began or now, now), now)
            episode.stalled(store)  # the file as it is now: a later commit is progress
            log.warning("%s", _waiting_line(store, episode, keeping))
        return episode


def _waiting_line(store: StoreURL, episode: _Episode, keeping: bool) -> str:
    fault, seconds, env = episode.fault, budget_seconds(episode.fault.kind), _env(episode.fault.kind)
    then = "writes of the running trial are kept meanwhile; " if keeping else ""
    if fault.kind == "busy" and store.file:
        where, until = f" ({store.file})", f"while it makes progress, up to {seconds:.0f} s without any ({env})"
    else:
        where, until = "", f"up to {seconds:.0f} s ({env})"
    return f"{store.label}{where}: {fault.detail} since {episode.clock}; {then}waiting {until}"


def answered(store: StoreURL) -> None:
    """The store answered: close its episode, saying so if one was open."""
    with _GUARD:
        episode = _EPISODES.pop(store.label, None)
    if episode is not None:
        log.info("%s answers again, after %.0f s", store.label, time.monotonic() - episode.since)


def unavailable(store: StoreURL, episode: _Episode) -> StoreUnavailable:
    episode.given_up_at = episode.given_up_at or time.monotonic()
    seconds, kind = time.monotonic() - episode.since, episode.fault.kind
    limit = f"{_env(kind)}={budget_seconds(kind):.0f}"
    if kind == "busy" and store.file:
        still = episode.given_up_at - episode.moved_at
        return StoreUnavailable(
            f"{store.label}: {store.file} stayed locked by another process for {seconds:.0f} s (since "
            f"{episode.clock}), with no commit to it for {still:.0f} s, longer than greenai waits ({limit})"
        )
    return StoreUnavailable(
        f"{store.label}: {episode.fault.detail} for {seconds:.0f} s, longer than greenai waits ({limit})"
    )


def full(store: StoreURL, fault: Fault) -> StoreFull:
    """The one line for a store whose disk is full: its key, the file and what the OS said."""
    file = fault.file or store.file
    where = f"the disk holding {file}" if file else "the disk of its server"
    return StoreFull(f"{store.label}: {where} is full ({fault.detail})")


def passing_fault(exc: BaseException, store: StoreURL, kinds: tuple[str, ...] = ("busy", "away")) -> Fault:
    """The fault of a failed call to `store`, if it is one of `kinds`, which pass and are worth
    waiting for. A full disk is raised at once as StoreFull naming the store; any other error is
    raised as it came."""
    fault = fault_of(exc)
    if fault is not None and fault.kind == "full":
        raise full(store, fault) from exc
    if fault is None or fault.kind not in kinds:
        raise exc
    return fault


def retry(call: Callable[[], T], store: StoreURL, kinds: tuple[str, ...] = ("busy", "away")) -> T:
    """call(), tried again while it fails because `store` is busy or away (the fault `kinds`
    waited for), up to the budget of that kind of fault (for a busy file: the budget without a
    commit to it); then StoreUnavailable. A full disk fails at once, as StoreFull naming the
    store. Once greenai has given up on a store, later calls fail at once for as long again,
    then are tried once, not waited for: a trial closing after the store failed it must not
    wait a budget per write."""
    with _GUARD:
        episode = _EPISODES.get(store.label)
    if episode is not None and episode.given_up_at is not None and episode.fault.kind in kinds:
        if time.monotonic() - episode.given_up_at < budget_seconds(episode.fault.kind):
            raise unavailable(store, episode)
    delay = 0.05
    while True:
        began = time.monotonic()
        try:
            result = call()
        except Exception as exc:
            fault = passing_fault(exc, store, kinds)
            episode = waiting(store, fault, began=began)
            remaining = budget_seconds(fault.kind) - episode.stalled(store)
            if episode.given_up_at is not None or remaining <= 0:
                raise unavailable(store, episode) from None
            time.sleep(min(delay * (1 + random.random()), remaining))
            delay = min(delay * 2, MAX_DELAY_SECONDS)
            continue
        answered(store)
        return result
