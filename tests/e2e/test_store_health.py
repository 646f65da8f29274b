"""Store files that are damaged, foreign or too new (tracking.uri, sweep.storage): refused before
anything runs, in one line naming the key, the file and what is wrong; nothing changes in any
store. The files are made by the real MLflow and Optuna, then damaged as a disk or a user would."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from store_readers import mlflow_runs, optuna_trials, sweep_runs
from test_bad_input import assert_refused

from greenai.errors import ConfigError
from greenai.stores.health import _revisions, check_store
from greenai.stores.url import StoreURL


def mlflow_db(folder: Path) -> Path:
    from mlflow import MlflowClient

    path = folder / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()  # MLflow creates and migrates it
    return path


def optuna_db(folder: Path) -> Path:
    path = folder / "optuna.db"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=f"sqlite:///{path}", study_name="s")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    return path


def optuna_journal(folder: Path) -> Path:
    from optuna.storages.journal import JournalFileBackend

    path = folder / "optuna.log"
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    optuna.create_study(storage=storage, study_name="s").optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    return path


def truncated(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def with_revision(path: Path, revision: str) -> Path:
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE alembic_version SET version_num = ?", (revision,))
    connection.close()
    return path


def older(kind: str) -> str:
    known, heads = _revisions(kind)
    return sorted(known - set(heads))[0]


def text_file(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


SQLITE, JOURNAL = "sqlite:///", "journal://"
# (how the file is made, scheme, key, what the line says)
BROKEN: list[tuple[str, Callable[[Path], Path], str, str, str]] = [
    ("truncated-mlflow", lambda d: truncated(mlflow_db(d)), SQLITE, "tracking.uri", "is truncated or damaged"),
    ("truncated-optuna", lambda d: truncated(optuna_db(d)), SQLITE, "sweep.storage", "is truncated or damaged"),
    (
        "text-as-sqlite",
        lambda d: text_file(d, "m.db", "not a database\n"),
        SQLITE,
        "tracking.uri",
        "is not an SQLite database",
    ),
    (
        "newer-mlflow",
        lambda d: with_revision(mlflow_db(d), "ffffffffffff"),
        SQLITE,
        "tracking.uri",
        "has schema revision ffffffffffff, unknown to the installed MLflow",
    ),
    (
        "newer-optuna",
        lambda d: with_revision(optuna_db(d), "v9.9.9.a"),
        SQLITE,
        "sweep.storage",
        "has schema revision v9.9.9.a, unknown to the installed Optuna",
    ),
    (
        "older-mlflow",
        lambda d: with_revision(mlflow_db(d), older("mlflow")),
        SQLITE,
        "tracking.uri",
        "has the schema of an older MLflow",
    ),
    ("optuna-as-mlflow", optuna_db, SQLITE, "tracking.uri", "is an Optuna study database, not an MLflow"),
    ("mlflow-as-optuna", mlflow_db, SQLITE, "sweep.storage", "is an MLflow tracking database, not an Optuna"),
    ("journal-as-sqlite", optuna_journal, SQLITE, "sweep.storage", "is an Optuna journal file, not an SQLite"),
    ("sqlite-as-journal", optuna_db, JOURNAL, "sweep.storage", "is an SQLite database, not an Optuna journal"),
    (
        "text-as-journal",
        lambda d: text_file(d, "j.log", "a line\nanother\n"),
        JOURNAL,
        "sweep.storage",
        "is not an Optuna journal",
    ),
    (
        "json-not-journal",
        lambda d: text_file(d, "j.log", '{"study": 1}\n'),
        JOURNAL,
        "sweep.storage",
        "is not an Optuna journal (Optuna cannot replay it",
    ),
    (
        "no-newline-journal",
        lambda d: text_file(d, "j.log", "hello"),
        JOURNAL,
        "sweep.storage",
        "is not an Optuna journal (Optuna reads no log from it)",
    ),
]


@pytest.mark.parametrize(("make", "scheme", "key", "message"), [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_a_broken_store_file_is_named_with_what_is_wrong(tmp_path, make, scheme, key, message):
    path = make(tmp_path)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    files = sorted(tmp_path.iterdir())
    with pytest.raises(ConfigError) as refused:
        check_store(StoreURL.parse(f"{scheme}{path}"), key)
    assert str(refused.value).startswith(f"{key}={scheme}{path}: {path} {message}"), refused.value
    assert "\n" not in str(refused.value)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before, "the check only reads"
    assert sorted(tmp_path.iterdir()) == files, "nothing created beside it"


def test_sound_stores_absent_and_empty_files_pass(tmp_path):
    check_store(StoreURL.parse(f"sqlite:///{mlflow_db(tmp_path)}"), "tracking.uri")
    check_store(StoreURL.parse(f"sqlite:///{optuna_db(tmp_path)}"), "sweep.storage")
    check_store(StoreURL.parse(f"journal://{optuna_journal(tmp_path)}"), "sweep.storage")
    journal = tmp_path / "optuna.log"
    torn = tmp_path / "torn.log"
    torn.write_bytes(journal.read_bytes() + b'{"op_code": 0, "worker')  # a writer still appending
    check_store(StoreURL.parse(f"journal://{torn}"), "sweep.storage")
    check_store(StoreURL.parse(f"sqlite:///{tmp_path / 'absent.db'}"), "sweep.storage")
    (tmp_path / "empty.db").touch()
    check_store(StoreURL.parse(f"sqlite:///{tmp_path / 'empty.db'}"), "tracking.uri")
    check_store(StoreURL.parse("http://127.0.0.1:9"), "tracking.uri")


def test_a_store_another_worker_is_creating_is_judged_once_it_is_done(tmp_path, monkeypatch):
    """MLflow migrates a new sqlite file in steps, under the store's creation lock (greenai's
    tracking.client): a worker starting alongside must not take the revision committed so far
    for an older schema (two workers on one fresh mlflow.db: one refused it, exit status 2)."""
    from greenai.stores import health as store_health
    from greenai.stores.url import CREATE

    path = mlflow_db(tmp_path)
    head = _revisions("mlflow")[1][0]
    read, checked, real = threading.Event(), {}, store_health._sqlite_problem

    def noted_read(*args):
        try:
            return real(*args)
        finally:
            read.set()

    def check():
        try:
            check_store(StoreURL.parse(f"{SQLITE}{path}"), "tracking.uri")
        except ConfigError as exc:
            checked["refused"] = str(exc)
        checked["done"] = True

    monkeypatch.setattr(store_health, "_sqlite_problem", noted_read)
    with StoreURL.parse(f"{SQLITE}{path}").lock(CREATE):
        with_revision(path, older("mlflow"))  # the creating worker is halfway through its migrations
        checker = threading.Thread(target=check)
        checker.start()
        assert read.wait(60), "the check read the file"
        with_revision(path, head)  # ... and done
    checker.join(60)
    assert checked == {"done": True}, checked


# Commands a user types, with a store file broken outside the working folder (assert_refused
# checks that the working folder stays empty).
COMMANDS = [
    (
        "tracking-uri-not-a-database",
        lambda d: text_file(d, "mlflow.db", "hello\n"),
        SQLITE,
        "tracking.uri",
        [],
        "is not an SQLite database",
    ),
    (
        "study-schema-newer",
        lambda d: with_revision(optuna_db(d), "v9.9.9.a"),
        SQLITE,
        "sweep.storage",
        ["-m", "searcher=random", "space=paper3"],
        "has schema revision v9.9.9.a, unknown to the installed Optuna",
    ),
    (
        "study-journal-not-a-journal",
        lambda d: text_file(d, "optuna.log", "x\ny\n"),
        JOURNAL,
        "sweep.storage",
        ["-m", "searcher=random", "space=paper3"],
        "is not an Optuna journal",
    ),
]


@pytest.mark.parametrize(
    ("make", "scheme", "key", "args", "message"), [c[1:] for c in COMMANDS], ids=[c[0] for c in COMMANDS]
)
def test_a_command_on_a_broken_store_file_is_refused_in_one_line(
    greenai, tiny, tmp_path, make, scheme, key, args, message
):
    folder = tmp_path / "stores"
    folder.mkdir()
    path = make(folder)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    url = f"{scheme}{path}"
    assert_refused(greenai, [*args, f"{key}={url}", *tiny], f"{key}={url}: {path} {message}")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in folder.iterdir()) == [path.name], "no lock, journal or new store beside it"


@pytest.mark.slow
def test_a_truncated_study_database_stops_the_rerun_before_any_run_changes(greenai, tiny):
    """The issue's case: a sweep finished, its optuna.db truncated, the command run again."""
    args = ["-m", "searcher=random", "space=paper3", "hydra.sweeper.n_trials=2", *tiny]
    greenai(*args)
    work = greenai.cwd
    runs_before = {r.info.run_id: r.info.status for r in mlflow_runs(work)}
    assert len(runs_before) == 3 and set(runs_before.values()) == {"FINISHED"}
    assert len(optuna_trials(work)) == 2
    truncated(work / "optuna.db")
    damaged = (work / "optuna.db").read_bytes()
    folders = sorted((work / "outputs").rglob(".hydra"))

    proc = greenai(*args[:3], "hydra.sweeper.n_trials=3", *tiny, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("greenai: error: ")]
    db = work / "optuna.db"
    assert errors == [
        f"greenai: error: sweep.storage=sqlite:///{db}: {db} is truncated or damaged"
        " (sqlite: database disk image is malformed); restore it from a backup or move it aside"
    ]
    assert "Traceback" not in proc.stderr
    runs_after = {r.info.run_id: r.info.status for r in mlflow_runs(work)}
    assert runs_after == runs_before, "no run created, reopened or flipped to FAILED"
    assert (work / "optuna.db").read_bytes() == damaged
    assert sorted((work / "outputs").rglob(".hydra")) == folders, "no new output folder"
    assert len(sweep_runs(mlflow_runs(work))) == 1


def test_the_report_on_a_broken_tracking_store_is_one_line(greenai, tmp_path):
    folder = tmp_path / "stores"
    folder.mkdir()
    path = text_file(folder, "mlflow.db", "hello\n")
    proc = greenai(f"tracking.uri=sqlite:///{path}", module="report", check=False)
    assert proc.returncode == 2
    line = f"greenai: error: tracking.uri=sqlite:///{path}: {path} is not an SQLite database"
    assert proc.stderr.strip().startswith(line) and len(proc.stderr.strip().splitlines()) == 1
