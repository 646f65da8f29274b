"""The report's cache of an experiment's runs: a repeated read asks MLflow only for what changed,
and never serves a run that is open, changed or deleted from the cache."""

from __future__ import annotations

import gc
import shutil
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from greenai.report import run_cache
from greenai.stores.tracking import all_runs

HOUR_MS = 3_600_000


class CountingClient:
    """An MlflowClient that counts the runs its searches return: what was read from MLflow."""

    def __init__(self, client: MlflowClient) -> None:
        self.client, self.runs_read = client, 0

    def __getattr__(self, name):
        return getattr(self.client, name)

    def search_runs(self, *args, **kwargs):
        page = self.client.search_runs(*args, **kwargs)
        self.runs_read += len(page)
        return page


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory) -> Path:
    """A migrated, empty MLflow store, made once: MLflow's schema migrations take seconds."""
    db = tmp_path_factory.mktemp("store") / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def store(empty_store, tmp_path):
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    return CountingClient(client), client.create_experiment("exp")


def ended_run(store, name: str, ended_ms_ago: int = HOUR_MS, accuracy: float = 0.5) -> str:
    """A run that ran and ended `ended_ms_ago`, as one from an earlier sweep."""
    client, exp = store
    now = int(time.time() * 1000)
    run_id = client.create_run(exp, run_name=name, start_time=now - ended_ms_ago - 1000).info.run_id
    client.log_metric(run_id, "accuracy", accuracy)
    client.set_terminated(run_id, end_time=now - ended_ms_ago)
    return run_id


def read(store, cache_file):
    client, exp = store
    before = client.runs_read
    records, reading = run_cache.read_runs(client, exp, cache_file)
    return records, reading, client.runs_read - before


def names(records) -> list[str]:
    return [r.name for r in records]


def test_a_repeated_read_asks_mlflow_for_nothing_when_nothing_changed(store, tmp_path):
    for i in range(5):
        ended_run(store, f"old{i}")
    cache = tmp_path / "report" / run_cache.CACHE_FILE
    first, reading, searched = read(store, cache)
    assert (reading.full, reading.fetched, searched) == (True, 5, 5) and cache.is_file()
    again, reading, searched = read(store, cache)
    assert again == first
    assert (reading.full, reading.cached, reading.fetched, reading.dropped, searched) == (False, 5, 0, 0, 0)


def test_runs_come_oldest_first_as_search_runs_orders_them(store, tmp_path):
    for i in range(4):
        ended_run(store, f"run{i}", ended_ms_ago=HOUR_MS * (5 - i))
    cache = tmp_path / run_cache.CACHE_FILE
    read(store, cache)
    ended_run(store, "newest", ended_ms_ago=0)
    records, _, _ = read(store, cache)
    client, exp = store
    assert (
        names(records) == [r.info.run_name for r in all_runs(client, exp)] == ["run0", "run1", "run2", "run3", "newest"]
    )


def test_a_run_that_finished_between_two_reports_appears_and_only_it_is_read(store, tmp_path):
    for i in range(3):
        ended_run(store, f"old{i}")
    cache = tmp_path / run_cache.CACHE_FILE
    read(store, cache)
    ended_run(store, "new", ended_ms_ago=0, accuracy=0.9)
    records, reading, searched = read(store, cache)
    assert "new" in names(records) and next(r for r in records if r.name == "new").metrics == {"accuracy": 0.9}
    assert (reading.cached, reading.fetched, searched) == (3, 1, 1)


def test_an_open_run_is_never_served_from_the_cache(store, tmp_path):
    client, exp = store
    ended_run(store, "old")
    running = client.create_run(exp, run_name="live").info.run_id
    client.log_metric(running, "accuracy", 0.1)
    cache = tmp_path / run_cache.CACHE_FILE
    read(store, cache)
    client.log_metric(running, "accuracy", 0.2)
    records, reading, _ = read(store, cache)
    live = next(r for r in records if r.name == "live")
    assert (live.status, live.metrics["accuracy"], reading.fetched) == ("RUNNING", 0.2, 1)
    # It ends with an end time older than the last read (another host's clock behind this one's):
    # it was open then, so it is read again all the same.
    client.log_metric(running, "accuracy", 0.3)
    client.set_terminated(running, end_time=int(time.time() * 1000) - HOUR_MS)
    records, reading, _ = read(store, cache)
    live = next(r for r in records if r.name == "live")
    assert (live.status, live.metrics["accuracy"], reading.fetched) == ("FINISHED", 0.3, 1)
    _, reading, searched = read(store, cache)
    assert (reading.fetched, searched) == (0, 0), "ended for good: from the cache from now on"


def test_a_run_closed_again_is_read_again(store, tmp_path):
    client, _ = store
    run_id = ended_run(store, "resumed")
    cache = tmp_path / run_cache.CACHE_FILE
    read(store, cache)
    client.update_run(run_id, status="RUNNING")  # a resumed sweep reopens its parent run
    client.log_metric(run_id, "accuracy", 0.7)
    client.set_terminated(run_id, "KILLED")
    records, reading, _ = read(store, cache)
    assert (records[0].status, records[0].metrics["accuracy"], reading.fetched) == ("KILLED", 0.7, 1)


def test_a_deleted_run_disappears_and_comes_back_when_restored(store, tmp_path):
    client, _ = store
    keep, gone = ended_run(store, "keep"), ended_run(store, "gone")
    cache = tmp_path / run_cache.CACHE_FILE
    read(store, cache)
    client.delete_run(gone)
    records, reading, _ = read(store, cache)
    assert names(records) == ["keep"] and (reading.dropped, reading.fetched) == (1, 0)
    client.restore_run(gone)
    records, reading, _ = read(store, cache)
    assert names(records) == ["keep", "gone"] and reading.fetched == 1
    assert keep in {r.run_id for r in records}


def test_a_run_deleted_before_the_first_report_is_found_when_restored(store, tmp_path):
    client, _ = store
    ended_run(store, "keep")
    restored = ended_run(store, "restored")
    client.delete_run(restored)
    cache = tmp_path / run_cache.CACHE_FILE
    assert names(read(store, cache)[0]) == ["keep"]
    client.restore_run(restored)
    assert names(read(store, cache)[0]) == ["keep", "restored"]


def test_a_cache_of_another_experiment_or_store_is_not_used(store, tmp_path):
    client, exp = store
    ended_run(store, "a")
    cache = tmp_path / run_cache.CACHE_FILE
    read(store, cache)
    other = client.create_experiment("other")
    client.set_terminated(client.create_run(other, run_name="b").info.run_id)
    records, reading = run_cache.read_runs(client, other, cache)
    assert names(records) == ["b"] and reading.full
    snapshot = run_cache.load(cache, run_cache.store_key(client.tracking_uri), other)
    assert snapshot is not None and run_cache.load(cache, run_cache.store_key("sqlite:///elsewhere.db"), other) is None
    assert client.tracking_uri not in cache.read_bytes().decode("latin-1"), "a digest, never the URI"


def test_an_unreadable_cache_means_reading_every_run(store, tmp_path, caplog):
    ended_run(store, "a")
    cache = tmp_path / run_cache.CACHE_FILE
    cache.write_bytes(b"not gzip")
    records, reading, _ = read(store, cache)
    assert names(records) == ["a"] and reading.full and "unreadable" in caplog.text
    assert read(store, cache)[1].full is False, "and it is rewritten"


def test_without_a_cache_file_every_run_is_read_and_nothing_kept(store, tmp_path):
    ended_run(store, "a")
    for _ in range(2):
        records, reading, searched = read(store, None)
        assert (names(records), reading.full, searched) == (["a"], True, 1)
    assert list(tmp_path.iterdir()) == [tmp_path / "mlflow.db"]


def test_the_garbage_collector_is_paused_only_during_a_read():
    with run_cache.collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with run_cache.collector_paused():
            pass
        assert not gc.isenabled(), "left as the caller had it"
    finally:
        gc.enable()
