"""The runs of an experiment as the report reads them: all of them the first time, and from then
on only what changed, with the rest kept in a cache file beside the report.

A run that has ended does not change, so the cache keeps it; everything is asked of MLflow through
its public search API, which works alike for sqlite, PostgreSQL and MLflow servers. Each later
report re-reads:

- runs that ended since the last read (`attributes.end_time >= last read - CLOCK_MARGIN_MS`):
  `set_terminated` stamps end_time, also when a resumed sweep closes what a dead process left;
- runs still open (`attributes.status = 'RUNNING'` or `'SCHEDULED'`), and those that were open at
  the last read, by id (`attributes.run_id IN (...)`): an open run is never served from the cache;
- deleted runs (`run_view_type=DELETED_ONLY`), which are left out; a run deleted at the last read
  and no longer deleted is re-read by id (restored) or dropped (removed for good by `mlflow gc`).

What this does not see, and `report.cache=false` (or deleting the file) does: an edit to a run that
had already ended which does not end it again (a rename, a tag set afterwards), a run imported with
an end time older than the last read, and a run deleted and removed for good between two reports.
"""

from __future__ import annotations

import contextlib
import gc
import gzip
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.entities import ViewType

from greenai.stores.run_rows import RunRecord
from greenai.stores.tracking import all_runs

log = logging.getLogger(__name__)
FORMAT = 1
CACHE_FILE = ".runs-cache.json.gz"
# end_time is stamped by whichever client closed the run, on its own clock, and committed a moment
# later: runs that ended up to this long before the last read began are read again.
CLOCK_MARGIN_MS = 10 * 60 * 1000
OPEN_STATUSES = ("RUNNING", "SCHEDULED")
IDS_PER_SEARCH = 500  # run ids per `IN (...)` filter: well within every database's parameter limit


@dataclass
class Reading:
    """What one read did: how many runs came from the cache and how many from MLflow."""

    cached: int = 0  # runs served from the cache
    fetched: int = 0  # runs read from MLflow (every run when `full`)
    dropped: int = 0  # cached runs left out: deleted, or removed for good
    full: bool = False  # no usable cache: every run read


@dataclass
class Snapshot:
    """The cache file: the runs as they were at `read_at`, for one store and experiment."""

    store: str  # a digest of the tracking URI (never the URI itself: it may hold a password)
    experiment_id: str
    read_at: int  # milliseconds, this machine's clock, when that read began
    runs: dict[str, RunRecord]  # active runs by id
    deleted: set[str] = field(default_factory=set)  # ids of the runs deleted at that read


def store_key(tracking_uri: str) -> str:
    return hashlib.sha256(tracking_uri.encode()).hexdigest()[:16]


def read_runs(mlflow: Any, experiment_id: str, cache_file: Path | None) -> tuple[list[RunRecord], Reading]:
    """The experiment's active runs, oldest first (as `search_runs` orders them), and what the
    read did. With `cache_file`, what it holds for this store and experiment is reused and the
    file is brought up to date; without, every run is read and nothing is kept."""
    key = store_key(mlflow.tracking_uri)
    started = now_ms()
    previous = load(cache_file, key, experiment_id) if cache_file else None
    if previous is None:
        runs = {r.run_id: r for r in search(mlflow, experiment_id)}
        snapshot = Snapshot(key, experiment_id, started, runs, deleted_ids(mlflow, experiment_id))
        reading = Reading(fetched=len(runs), full=True)
    else:
        snapshot, reading = refreshed(mlflow, previous, started)
    if cache_file and (reading.full or reading.fetched or reading.dropped):
        save(cache_file, snapshot)
    return oldest_first(snapshot.runs.values()), reading


def refreshed(mlflow: Any, previous: Snapshot, started: int) -> tuple[Snapshot, Reading]:
    """`previous` brought up to date: see the module's docstring for what is read again."""
    exp = previous.experiment_id
    changed = search(mlflow, exp, f"attributes.end_time >= {previous.read_at - CLOCK_MARGIN_MS}")
    for status in OPEN_STATUSES:
        changed += search(mlflow, exp, f"attributes.status = '{status}'")
    deleted = deleted_ids(mlflow, exp)
    was_open = {i for i, r in previous.runs.items() if r.status in OPEN_STATUSES}
    # Open at the last read, or deleted then and not now: read again by id if not read above.
    recheck = (was_open | (previous.deleted - deleted)) - {r.run_id for r in changed}
    fresh = {r.run_id: r for r in changed + by_ids(mlflow, exp, recheck) if r.run_id not in deleted}
    gone = {i for i in previous.runs if i not in fresh and (i in deleted or i in recheck)}
    kept = {i: r for i, r in previous.runs.items() if i not in fresh and i not in gone}
    reading = Reading(cached=len(kept), fetched=len(fresh), dropped=len(gone))
    return Snapshot(previous.store, exp, started, kept | fresh, deleted), reading


def search(
    mlflow: Any, experiment_id: str, filter_string: str = "", view: int = ViewType.ACTIVE_ONLY
) -> list[RunRecord]:
    with collector_paused():
        return [RunRecord.from_run(r) for r in all_runs(mlflow, experiment_id, filter_string, view)]


def deleted_ids(mlflow: Any, experiment_id: str) -> set[str]:
    return {r.run_id for r in search(mlflow, experiment_id, view=ViewType.DELETED_ONLY)}


def by_ids(mlflow: Any, experiment_id: str, ids: Iterable[str]) -> list[RunRecord]:
    """The active runs among `ids` (an id that is gone, or deleted, is simply not found)."""
    ids, found = sorted(ids), []
    for start in range(0, len(ids), IDS_PER_SEARCH):
        quoted = ", ".join(f"'{i}'" for i in ids[start : start + IDS_PER_SEARCH])
        found += search(mlflow, experiment_id, f"attributes.run_id IN ({quoted})")
    return found


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """MLflow's `search_runs` builds an ORM object and an entity for every param, tag and metric
    of every run (about 140 per greenai trial). Python's cyclic garbage collector re-walks all
    those live objects each time its thresholds trip: about two thirds of a 10,000-run read
    (benchmarks/report_scale.py prints both). Reference counting still frees what is dropped;
    cycles made meanwhile are collected once the read is over."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def oldest_first(runs: Iterable[RunRecord]) -> list[RunRecord]:
    """Start time, then run id: the order `search_runs` gives with `start_time ASC`."""
    return sorted(runs, key=lambda r: (r.start_time is not None, r.start_time or 0, r.run_id))


def now_ms() -> int:
    return int(time.time() * 1000)


# ------------------------------------------------------------------ the file


def load(path: Path, store: str, experiment_id: str) -> Snapshot | None:
    """The cache in `path` if it is one this version wrote for this store and experiment."""
    try:
        data = json.loads(gzip.decompress(path.read_bytes()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:  # truncated or not ours: read everything again
        log.warning("report cache %s unreadable (%s): reading every run", path, exc)
        return None
    if (data.get("format"), data.get("store"), data.get("experiment_id")) != (FORMAT, store, experiment_id):
        return None
    runs = {r["run_id"]: RunRecord.from_dict(r) for r in data["runs"]}
    return Snapshot(store, experiment_id, data["read_at"], runs, set(data["deleted"]))


def save(path: Path, snapshot: Snapshot) -> None:
    """Written beside and then renamed over the old file, so that a report stopped midway, or
    two at once, never leave half a cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "format": FORMAT,
        "store": snapshot.store,
        "experiment_id": snapshot.experiment_id,
        "read_at": snapshot.read_at,
        "deleted": sorted(snapshot.deleted),
        "runs": [r.to_dict() for r in snapshot.runs.values()],
    }
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    # One string, compressed at once (json.dump into a gzip stream writes it in small pieces, far
    # slower); level 1: an eighth of the size of plain JSON, for a tenth of a second at 10,000 runs.
    partial.write_bytes(gzip.compress(json.dumps(data).encode(), compresslevel=1))
    os.replace(partial, path)
