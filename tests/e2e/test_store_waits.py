"""Stores that are busy or away for a while: a sqlite file another process keeps locked (a
write transaction held open), a PostgreSQL study database stopped mid-sweep and started again.
greenai waits, says once what it waits for, and carries on; past its budget it stops with one
line naming the store. The stores are read back afterwards."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import optuna
import pytest
from datasets_on_disk import tiny_args
from servers import Postgres
from store_readers import assert_every_epoch_once, by_state, mlflow_runs, optuna_trials, sweep_runs, trial_runs
from waiting import wait_for


@contextmanager
def locked(path: Path):
    """Another process's long write transaction on the sqlite file: it holds the exclusive
    lock, so no one else reads or writes it until the block ends."""
    connection = sqlite3.connect(path, timeout=60, isolation_level=None)
    connection.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        connection.execute("ROLLBACK")
        connection.close()


def store(work: Path):
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{work / 'mlflow.db'}")


def lines_with(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]


def through_a_30_s_lock(greenai, args: list[str], log: Path, after: str, db: Path) -> str:
    """Start the command, hold `db` locked for 30 s once `after` is logged (the command waits,
    it does not fail), then let it finish with exit status 0. Its output."""
    proc = greenai.start(*args, log=log)
    wait_for(log, after, proc)
    with locked(db):
        time.sleep(30)
        assert proc.poll() is None, "still waiting, not failed"
    assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    return log.read_text()


@pytest.mark.slow
def test_a_run_waits_for_its_mlflow_file_locked_30_s_says_so_once_and_finishes(greenai, fashion_root, tmp_path):
    epochs = 6
    args = tiny_args(fashion_root, tmp_path / "cache", epochs=epochs, batch_size=16)
    db = greenai.cwd / "mlflow.db"
    text = through_a_30_s_lock(greenai, args, tmp_path / "run.log", "epoch   2/6", db)
    waits = lines_with(text, f"tracking.uri=sqlite:///{db} ({db}): locked by another process")
    assert len(waits) == 1, text[-3000:]
    assert len(lines_with(text, f"tracking.uri=sqlite:///{db} answers again")) == 1
    (run,) = trial_runs(mlflow_runs(greenai.cwd))
    assert run.info.status == "FINISHED" and run.data.metrics["epochs_run"] == epochs
    assert_every_epoch_once(store(greenai.cwd), run, epochs)


@pytest.mark.slow
def test_a_sweep_waits_for_its_study_file_locked_30_s_says_so_once_and_completes(greenai, fashion_root, tmp_path):
    epochs = 6
    args = [
        "-m",
        "searcher=grid",
        "lr=choice(0.001,0.002)",
        "hydra.sweeper.n_trials=2",
        *tiny_args(fashion_root, tmp_path / "cache", epochs=epochs, batch_size=16),
    ]
    db = greenai.cwd / "optuna.db"
    text = through_a_30_s_lock(greenai, args, tmp_path / "sweep.log", "round1] epoch   2/6", db)
    assert len(lines_with(text, f"sweep.storage=sqlite:///{db} ({db}): locked by another process")) == 1, text[-3000:]
    assert "database is locked" not in text and "Traceback" not in text
    states = Counter(t.state.name for t in optuna.load_study(study_name=None, storage=f"sqlite:///{db}").trials)
    assert states == {"COMPLETE": 2}, states
    runs = mlflow_runs(greenai.cwd)
    assert len(by_state(trial_runs(runs), "finished")) == 2 and len(sweep_runs(runs)) == 1
    for run in trial_runs(runs):
        assert_every_epoch_once(store(greenai.cwd), run, epochs)


@pytest.mark.slow
def test_past_the_busy_budget_a_run_stops_with_one_line_naming_the_store(greenai, fashion_root, tmp_path):
    args = tiny_args(fashion_root, tmp_path / "cache", epochs=6, batch_size=16)
    log = tmp_path / "run.log"
    # A 4 s budget instead of 120 s, so the test outlasts it quickly.
    proc = greenai.start(*args, log=log, extra_env={"GREENAI_STORE_BUSY_SECONDS": "4"})
    wait_for(log, "epoch   2/6", proc)
    db = greenai.cwd / "mlflow.db"
    with locked(db):
        code = proc.wait(timeout=300)
    text = log.read_text()
    assert code == 2, text[-3000:]
    errors = [line for line in text.splitlines() if line.startswith("greenai: error: ")]
    assert len(errors) == 1 and "Traceback" not in text, text[-3000:]
    assert errors[0].startswith(f"greenai: error: tracking.uri=sqlite:///{db}: {db} stayed locked by another process")
    assert errors[0].endswith("longer than greenai waits (GREENAI_STORE_BUSY_SECONDS=4)")


def test_past_the_busy_budget_a_study_write_stops_with_one_line_naming_the_store(tmp_path, monkeypatch, caplog):
    from greenai.errors import StoreUnavailable
    from greenai.stores.study_storage import make_storage
    from greenai.stores.url import StoreURL

    monkeypatch.setenv("GREENAI_STORE_BUSY_SECONDS", "1")
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = make_storage(StoreURL.parse(url))
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    with locked(tmp_path / "optuna.db"), caplog.at_level(logging.WARNING), pytest.raises(StoreUnavailable) as stopped:
        trial.set_user_attr("energy_j", 1.0)
    assert str(stopped.value).startswith(f"sweep.storage={url}: {tmp_path / 'optuna.db'} stayed locked")
    assert len(lines_with(caplog.text, "waiting while it makes progress, up to 1 s without any")) == 1
    time.sleep(1.5)  # greenai fails calls at once for a budget's length after giving up on a store
    trial.set_user_attr("energy_j", 2.0)  # the lock is gone: it answers again
    assert study.trials[0].user_attrs == {"energy_j": 2.0}


# Another process that keeps the sqlite file busy but makes progress: it commits a write every
# 0.2 s and takes the lock again at once, for `seconds` (a worker writing back to back).
BUSY_NEIGHBOUR = """
import sqlite3, sys, time
connection = sqlite3.connect(sys.argv[1], timeout=60, isolation_level=None)
connection.execute("CREATE TABLE IF NOT EXISTS neighbour (at REAL)")
connection.execute("BEGIN IMMEDIATE")
print("holding", flush=True)
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    connection.execute("INSERT INTO neighbour VALUES (?)", (time.time(),))
    time.sleep(0.2)
    connection.execute("COMMIT")
    connection.execute("BEGIN IMMEDIATE")
connection.execute("DROP TABLE neighbour")
connection.execute("COMMIT")
"""


def busy_neighbour(db: Path, seconds: float) -> subprocess.Popen:
    """Start BUSY_NEIGHBOUR on `db` and return once it holds the lock."""
    neighbour = subprocess.Popen(
        [sys.executable, "-c", BUSY_NEIGHBOUR, str(db), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert neighbour.stdout.readline().strip() == "holding"
    return neighbour


def test_a_store_busy_with_another_writers_progress_is_waited_for_past_the_budget(tmp_path, monkeypatch, caplog):
    """The busy limit is for a lock that is stuck: while the holder commits, greenai waits,
    however long; the one waiting line names the store and since when it is locked."""
    from greenai.stores import waits as store_waits
    from greenai.stores.url import StoreURL

    monkeypatch.setenv("GREENAI_STORE_BUSY_SECONDS", "1")
    db = tmp_path / "mlflow.db"
    sqlite3.connect(db).close()
    neighbour = busy_neighbour(db, 5)

    def write() -> None:
        connection = sqlite3.connect(db, timeout=0.3, isolation_level=None)
        try:
            connection.execute("CREATE TABLE IF NOT EXISTS ours (x)")
        finally:
            connection.close()

    store = StoreURL.parse(f"sqlite:///{db}", key="tracking.uri")
    started = time.monotonic()
    with caplog.at_level(logging.INFO):
        store_waits.retry(write, store, ("busy",))
    assert time.monotonic() - started > 1, "written after waiting longer than the budget, not refused"
    assert neighbour.wait(timeout=60) == 0
    waits = lines_with(caplog.text, f"tracking.uri=sqlite:///{db} ({db}): locked by another process since ")
    assert len(waits) == 1, caplog.text
    assert "waiting while it makes progress, up to 1 s without any (GREENAI_STORE_BUSY_SECONDS)" in waits[0]
    assert len(lines_with(caplog.text, "answers again")) == 1


@pytest.mark.slow
def test_four_workers_wait_for_their_mlflow_file_while_another_writer_keeps_committing(greenai, fashion_root, tmp_path):
    """Four sweeping processes on one mlflow.db and one optuna.db; mid-sweep another process
    keeps mlflow.db busy, committing, for longer than the busy limit (MLflow's own sqlite wait
    is 20 s a call, so 50 s is two whole waits, each past the 5 s limit): every worker waits and
    finishes."""
    args = [
        "-m",
        "searcher=random",
        "space=paper3",
        "sweep.study_name=shared",
        "hydra.sweeper.n_trials=4",
        *tiny_args(fashion_root, tmp_path / "cache", epochs=2),
    ]
    logs = [tmp_path / f"worker{i}.log" for i in range(4)]
    procs = [greenai.start(*args, log=log, extra_env={"GREENAI_STORE_BUSY_SECONDS": "5"}) for log in logs]
    deadline = time.monotonic() + 600
    while not any("] epoch   1/2" in log.read_text() for log in logs):  # a trial is training
        assert all(p.poll() is None for p in procs) and time.monotonic() < deadline, logs[0].read_text()[-3000:]
        time.sleep(0.2)
    neighbour = busy_neighbour(greenai.cwd / "mlflow.db", 50)
    codes = [p.wait(timeout=900) for p in procs]
    assert neighbour.wait(timeout=60) == 0
    texts = [log.read_text() for log in logs]
    assert codes == [0, 0, 0, 0], [t[-2000:] for t in texts]
    assert any("locked by another process since" in t for t in texts), "the workers met the busy file"
    assert not any("greenai: error" in t for t in texts)
    assert Counter(t.state.name for t in optuna_trials(greenai.cwd)) == {"COMPLETE": 4}
    runs = mlflow_runs(greenai.cwd)
    assert len(by_state(trial_runs(runs), "finished")) == 4 and len(sweep_runs(runs)) == 1


@pytest.fixture
def postgres():
    server = Postgres()
    server.start()
    yield server
    server.remove()


@pytest.mark.slow
def test_a_study_database_stopped_mid_sweep_is_waited_for_and_each_trial_told_once(
    greenai, fashion_root, tmp_path, postgres
):
    epochs = 8
    args = [
        "-m",
        "searcher=random",
        "space=paper3",
        "pruner=median",
        "hydra.sweeper.n_trials=3",
        f"sweep.storage={postgres.url}",
        "sweep.study_name=away",
        *tiny_args(fashion_root, tmp_path / "cache", epochs=epochs, batch_size=16),
    ]
    log = tmp_path / "sweep.log"
    proc = greenai.start(*args, log=log)
    wait_for(log, "round2] epoch   2/8", proc)
    postgres.stop()
    stopped = time.monotonic()
    # Training goes on to its last epoch with the database away, then waits to tell its result.
    wait_for(log, "round2] epoch   8/8", proc)
    wait_for(log, "the database does not answer", proc)
    time.sleep(max(0.0, 20 - (time.monotonic() - stopped)))  # the database stays away 20 s at least
    postgres.start()
    assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]

    text = log.read_text()
    store = "sweep.storage=postgresql://greenai:***@"
    assert len(lines_with(text, "the database does not answer")) == 1, text[-3000:]
    assert lines_with(text, "the database does not answer")[0].split("] - ")[-1].startswith(store)
    assert len(lines_with(text, "answers again")) == 1
    study = optuna.load_study(study_name="away", storage=postgres.url)
    trials = study.get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3, "n_trials exactly, each told once"
    away = trials[1]
    assert sorted(away.intermediate_values) == list(range(1, epochs + 1)), "the kept per-epoch writes arrived"
    figures = away.user_attrs["figures"]
    assert figures["epochs_run"] == epochs and figures["energy_j"] > 0
    assert away.value == figures["accuracy"]
    runs = mlflow_runs(greenai.cwd)
    assert len(by_state(trial_runs(runs), "finished")) == 3 and len(sweep_runs(runs)) == 1
    assert sorted(int(r.data.tags["optuna.trial_number"]) for r in trial_runs(runs)) == [0, 1, 2]
