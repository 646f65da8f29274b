"""A full disk under a store: the MLflow store (`tracking.uri`), the Optuna study
(`sweep.storage`) or Hydra's output folder (`hydra.sweep.dir`, `hydra.run.dir`), each in turn on
a small tmpfs of its own that the test fills while trial 1 of 3 trains. The trial keeps what the
other store can still take, the sweep launches no further trial, the command ends with one line
naming the store and the file (exit status 3); once the filler is deleted, the same command
completes the study. The stores are read back after each command. Other cases (a PostgreSQL
disk, a quota) are told apart by the same classifier, tested here on the driver's own errors."""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
from collections import Counter
from pathlib import Path

import optuna
import pytest
from datasets_on_disk import tiny_args
from mlflow import MlflowClient
from small_disk import SmallDisk
from store_readers import assert_every_epoch_once, by_state, energy_kept, sweep_runs, trial_runs
from waiting import wait_for

EPOCHS = 40  # long enough that trial 1 is still training when its disk fills
# The rerun trains three trials of EPOCHS epochs: minutes on a quiet machine, over ten on a busy
# one (an epoch took 10 to 20 s under a CPU hog on a shared machine), longer than the fixture's
# default limit; the whole test (the first command, up to 300 s, then the rerun) gets its own.
RERUN_SECONDS = 1800
SWEEP_TEST_SECONDS = 300 + RERUN_SECONDS + 300
LINE_END = (
    "; the sweep stopped and starts no further trial. Finished trials are safe; free space there, then rerun "
    "the same command to continue the study"
)


def sweep_args(fashion_root: Path, tmp_path: Path, *store: str) -> list[str]:
    return [
        "-m",
        "searcher=grid",
        "lr=choice(0.001,0.002,0.003)",
        "hydra.sweeper.n_trials=3",
        *tiny_args(fashion_root, tmp_path / "cache", epochs=EPOCHS, batch_size=16),
        *store,
    ]


def runs_in(db: Path) -> list:
    client = MlflowClient(f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("greenai")
    assert experiment is not None
    return client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])


def trials_in(db: Path) -> list:
    storage = f"sqlite:///{db}"
    (summary,) = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary.study_name, storage=storage).get_trials(deepcopy=False)


def stopped_by_filling_during_trial_1(greenai, args: list[str], disk: SmallDisk, log: Path, starts: str) -> str:
    """Start the sweep and fill the disk while trial 1 trains: the command stops with exit
    status 3 and one line starting `starts`, and launches no further trial. Its output."""
    proc = greenai.start(*args, log=log)
    wait_for(log, "round1] epoch   2/", proc)
    disk.fill()
    code = proc.wait(timeout=300)
    text = log.read_text()
    assert code == 3, text[-3000:]
    assert_one_line(text, starts)
    assert "round2]" not in text and "#1 :" not in text, "no further trial is launched"
    return text


def epochs_trained(text: str) -> int:
    """The epochs trial 1 trained, as its progress lines say: the disk fills during trial 1, and
    its next write to the full store (a per-epoch batch, a heartbeat, or its closing write)
    stops it; on a busy machine that write may come before its last epoch."""
    epochs = len([line for line in text.splitlines() if "round1] epoch " in line])
    assert 2 <= epochs <= EPOCHS, text[-3000:]
    return epochs


def assert_one_line(text: str, starts: str, ends: str = LINE_END) -> None:
    errors = [line for line in text.splitlines() if line.startswith("greenai: error: ")]
    assert len(errors) == 1, text[-3000:]
    assert errors[0].startswith(f"greenai: error: {starts}") and errors[0].endswith(ends), errors[0]
    assert "Traceback" not in text and "Logging error" not in text, text[-3000:]


def assert_resumed_to_three(optuna_db: Path, mlflow_db: Path, interrupted: bool) -> None:
    """The rerun completed the study: 3 trials COMPLETE (the interrupted one's point run again),
    3 finished runs, one per trial, each with every epoch's metrics once, nothing RUNNING in
    either store."""
    trials = trials_in(optuna_db)
    states = Counter(t.state.name for t in trials)
    assert states == ({"COMPLETE": 3, "FAIL": 1} if interrupted else {"COMPLETE": 3}), states
    if interrupted:
        (retry,) = [t for t in trials if t.user_attrs.get("retry_of") == 0]
        assert retry.state.name == "COMPLETE", "the interrupted point ran again"
    runs = runs_in(mlflow_db)
    trial_runs_ = trial_runs(runs)
    assert not [r for r in runs if r.info.status == "RUNNING"], "no run is left RUNNING"
    finished = by_state(trial_runs_, "finished")
    assert sorted(int(r.data.tags["optuna.trial_number"]) for r in finished) == sorted(
        t.number for t in trials if t.state.name == "COMPLETE"
    ), "each complete trial has one finished run"
    assert len(finished) == 3 and len(trial_runs_) == (4 if interrupted else 3)
    client = MlflowClient(f"sqlite:///{mlflow_db}")
    for run in finished:
        assert_every_epoch_once(client, run, EPOCHS)
    (sweep,) = sweep_runs(runs)
    assert sweep.info.status == "FINISHED"


@pytest.mark.slow
@pytest.mark.timeout(SWEEP_TEST_SECONDS)
def test_the_mlflow_store_disk_fills_during_trial_1(greenai, fashion_root, tmp_path, small_disk):
    db = small_disk.path / "mlflow.db"
    args = sweep_args(fashion_root, tmp_path, f"tracking.uri=sqlite:///{db}")
    text = stopped_by_filling_during_trial_1(
        greenai,
        args,
        small_disk,
        tmp_path / "first.log",
        f"tracking.uri=sqlite:///{db}: the disk holding {db} is full (database or disk is full)",
    )
    # The study took what MLflow could not: the trial failed as interrupted, its figures kept.
    (trial,) = trials_in(greenai.cwd / "optuna.db")
    assert trial.state.name == "FAIL" and trial.user_attrs["interrupted"] is True, trial
    assert trial.user_attrs["failure_reason"].startswith("StoreFull: tracking.uri=")
    figures = trial.user_attrs["figures"]
    assert figures["energy_j"] > 0 and figures["epochs_run"] == epochs_trained(text)
    assert len(trial_runs(runs_in(db))) == 1
    small_disk.free()
    greenai(*args, timeout=RERUN_SECONDS)
    assert_resumed_to_three(greenai.cwd / "optuna.db", db, interrupted=True)
    (stopped,) = [r for r in trial_runs(runs_in(db)) if r.data.tags["optuna.trial_number"] == "0"]
    assert stopped.info.status == "KILLED", "the next command closed the run its disk kept open"


@pytest.mark.slow
@pytest.mark.timeout(SWEEP_TEST_SECONDS)
def test_the_study_disk_fills_during_trial_1(greenai, fashion_root, tmp_path, small_disk):
    db = small_disk.path / "optuna.db"
    args = sweep_args(fashion_root, tmp_path, f"sweep.storage=sqlite:///{db}")
    text = stopped_by_filling_during_trial_1(
        greenai,
        args,
        small_disk,
        tmp_path / "first.log",
        f"sweep.storage=sqlite:///{db}: the disk holding {db} is full (database or disk is full)",
    )
    # MLflow took what the study could not: the run closed KILLED with its figures.
    (run,) = trial_runs(runs_in(greenai.cwd / "mlflow.db"))
    assert run.info.status == "KILLED" and run.data.tags["greenai.trial_state"] == "killed"
    assert run.data.tags["greenai.failure_reason"].startswith("StoreFull: sweep.storage=")
    assert energy_kept(run) and run.data.metrics["epochs_run"] == epochs_trained(text)
    (trial,) = trials_in(db)
    assert trial.state.name == "RUNNING", "its disk full, the study could not be told; the rerun fails it"
    small_disk.free()
    greenai(*args, timeout=RERUN_SECONDS)
    assert_resumed_to_three(db, greenai.cwd / "mlflow.db", interrupted=True)
    (failed,) = [t for t in trials_in(db) if t.state.name == "FAIL"]
    assert failed.number == 0 and failed.user_attrs["interrupted"] is True


@pytest.mark.slow
@pytest.mark.timeout(SWEEP_TEST_SECONDS)
def test_the_sweep_folder_disk_fills_during_trial_1(greenai, fashion_root, tmp_path, small_disk):
    folder = small_disk.path / "sweep"
    args = sweep_args(fashion_root, tmp_path, f"hydra.sweep.dir={folder}")
    text = stopped_by_filling_during_trial_1(
        greenai, args, small_disk, tmp_path / "first.log", f"hydra.sweep.dir={folder}: the disk holding {folder}"
    )
    stops = [line for line in text.splitlines() if "this job's log stops here" in line]
    assert len(stops) == 1 and f"the disk holding {folder}/0/train.log is full" in stops[0], text[-3000:]
    # Both stores took the whole trial: only the sweep folder's disk is full.
    (trial,) = trials_in(greenai.cwd / "optuna.db")
    assert trial.state.name == "COMPLETE"
    (run,) = trial_runs(runs_in(greenai.cwd / "mlflow.db"))
    assert run.info.status == "FINISHED" and run.data.metrics["epochs_run"] == EPOCHS
    small_disk.free()
    greenai(*args, timeout=RERUN_SECONDS)
    assert_resumed_to_three(greenai.cwd / "optuna.db", greenai.cwd / "mlflow.db", interrupted=False)


def test_a_single_run_whose_mlflow_disk_fills_stops_with_one_line(greenai, fashion_root, tmp_path, small_disk):
    db = small_disk.path / "mlflow.db"
    args = [
        f"dataset.root={fashion_root}",
        f"dataset.cache_dir={tmp_path / 'cache'}",
        "batch_size=16",
        f"tracking.uri=sqlite:///{db}",
    ]
    log = tmp_path / "run.log"
    proc = greenai.start(*args, f"epochs={EPOCHS}", log=log)
    wait_for(log, "epoch   2/", proc)
    small_disk.fill()
    code = proc.wait(timeout=300)
    text = log.read_text()
    assert code == 3, text[-3000:]
    assert_one_line(
        text,
        f"tracking.uri=sqlite:///{db}: the disk holding {db} is full (database or disk is full)",
        "; the run stopped, recorded as far as the stores could take it. Free space there, then run the command again",
    )
    small_disk.free()
    greenai(*args, "epochs=1")
    first, second = trial_runs(runs_in(db))
    assert first.info.status == "KILLED", "the next command closed the run its disk kept open"
    assert second.info.status == "FINISHED"


def test_a_single_run_whose_log_meets_a_full_disk_finishes_and_says_so(greenai, fashion_root, tmp_path, small_disk):
    folder = small_disk.path / "run"
    args = [f"dataset.root={fashion_root}", f"dataset.cache_dir={tmp_path / 'cache'}", "batch_size=16"]
    log = tmp_path / "run.log"
    proc = greenai.start(*args, f"epochs={EPOCHS}", f"hydra.run.dir={folder}", log=log)
    wait_for(log, "epoch   2/", proc)
    small_disk.fill()
    code = proc.wait(timeout=300)
    text = log.read_text()
    assert code == 3, text[-3000:]
    assert_one_line(
        text,
        f"hydra.run.dir={folder}: the disk holding {folder}/train.log is full (No space left on device)",
        "; the run finished and is recorded in the stores, but its log is cut short. Free space there before the "
        "next command",
    )
    assert len([line for line in text.splitlines() if "this job's log stops here" in line]) == 1
    assert f"epoch  {EPOCHS}/{EPOCHS}" in text, "the console kept every line"
    (run,) = trial_runs(runs_in(greenai.cwd / "mlflow.db"))
    assert run.info.status == "FINISHED" and run.data.metrics["epochs_run"] == EPOCHS


def test_a_single_run_whose_output_folder_is_full_does_not_start(greenai, fashion_root, tmp_path, small_disk):
    small_disk.fill()
    folder = small_disk.path / "run"
    proc = greenai(
        f"dataset.root={fashion_root}",
        f"dataset.cache_dir={tmp_path / 'cache'}",
        "epochs=1",
        f"hydra.run.dir={folder}",
        check=False,
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode == 3, text[-3000:]
    assert_one_line(
        text,
        f"hydra.run.dir={folder}: the disk holding {folder}",
        "; the run did not start. Free space there, then run the command again",
    )
    assert not (greenai.cwd / "mlflow.db").exists(), "no run was opened"


# ---------------------------------------------------------------- the classifier, on real errors


def test_a_full_disk_is_told_apart_from_a_busy_or_absent_store_wherever_it_is_in_the_chain():
    import psycopg
    from mlflow.exceptions import MlflowException
    from sqlalchemy import exc as sa

    from greenai.errors import StoreFull
    from greenai.stores.waits import fault_of

    def chained(*errors: BaseException) -> BaseException:
        for cause, outer in zip(errors, errors[1:], strict=False):
            outer.__cause__ = cause
        return errors[-1]

    sqlite_full = sa.OperationalError("INSERT ...", {}, sqlite3.OperationalError("database or disk is full"))
    assert fault_of(chained(sqlite_full, MlflowException(str(sqlite_full)))).kind == "full"
    assert fault_of(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/w/mlruns/x")).file == "/w/mlruns/x"
    assert (
        fault_of(chained(OSError(errno.EDQUOT, os.strerror(errno.EDQUOT)), RuntimeError("write failed"))).kind == "full"
    )
    pg_full = psycopg.errors.DiskFull('could not write to file "pg_wal/xlogtemp.52": no room')
    fault = fault_of(sa.OperationalError("UPDATE ...", {}, pg_full))
    assert fault.kind == "full", "not 'away': SQLSTATE 53100, whatever the message says"
    assert fault.detail == 'could not write to file "pg_wal/xlogtemp.52": no room'
    pg_away = psycopg.OperationalError("connection refused")
    assert fault_of(sa.OperationalError("SELECT 1", {}, pg_away)).kind == "away"
    assert fault_of(sa.OperationalError("x", {}, sqlite3.OperationalError("database is locked"))).kind == "busy"
    assert fault_of(StoreFull("sweep.storage=...: the disk holding x is full (database or disk is full)")) is None
    assert fault_of(ValueError("bad value")) is None


def test_a_full_study_disk_fails_the_write_at_once_naming_the_store(small_disk, monkeypatch):
    """The real Optuna storage greenai opens, its sqlite file on the small disk: a write once
    the disk is full fails at once (no waiting budget spent) with the store's one line, and
    succeeds again once there is space."""
    from greenai.errors import StoreFull
    from greenai.stores.study_storage import make_storage
    from greenai.stores.url import StoreURL

    monkeypatch.setenv("GREENAI_STORE_BUSY_SECONDS", "60")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{small_disk.path / 'optuna.db'}"
    study = optuna.create_study(storage=make_storage(StoreURL.parse(url)), study_name="s")
    trial = study.ask()
    small_disk.fill()
    with pytest.raises(StoreFull) as stopped:
        trial.set_user_attr("energy_j", 1.0)
    db = small_disk.path / "optuna.db"
    assert str(stopped.value) == f"sweep.storage={url}: the disk holding {db} is full (database or disk is full)"
    small_disk.free()
    trial.set_user_attr("energy_j", 2.0)
    assert study.trials[0].user_attrs == {"energy_j": 2.0}


def test_a_job_log_on_a_full_disk_says_so_once_and_stops(small_disk, capsys):
    """Python's logging prints a traceback for every record a full disk refuses; the guarded
    handler says it once and writes no more."""
    from greenai.stores import log_files

    handler = logging.FileHandler(small_disk.path / "train.log")
    logger = logging.getLogger("test_full_disk.job")
    root = logging.getLogger()
    console = logging.StreamHandler()
    root.addHandler(handler)
    root.addHandler(console)
    log_files._full.clear()
    try:
        log_files.guard_log_files(("hydra.sweep.dir", small_disk.path))
        small_disk.fill()
        for i in range(200):
            logger.warning("epoch %d", i)
    finally:
        root.removeHandler(handler)
        root.removeHandler(console)
        handler.close()
    err = capsys.readouterr().err
    assert "Logging error" not in err and "Traceback" not in err
    stops = [line for line in err.splitlines() if "this job's log stops here" in line]
    assert len(stops) == 1, err[-2000:]
    assert stops[0].startswith(
        f"hydra.sweep.dir={small_disk.path}: the disk holding {small_disk.path / 'train.log'} is full"
    )
    assert err.count("epoch 199") == 1, "the console keeps every line"
    assert str(log_files.full()) in stops[0]
    log_files._full.clear()
