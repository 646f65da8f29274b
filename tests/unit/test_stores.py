"""Store URLs as values: parsed once, relative paths from the launch folder, locks and redaction."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from greenai.errors import ConfigError
from greenai.stores.reachability import check_reachable
from greenai.stores.url import StoreURL


def test_a_relative_sqlite_file_is_taken_from_the_launch_folder_and_keeps_its_query(tmp_path):
    store = StoreURL.parse("sqlite:///runs/mlflow.db?timeout=30", tmp_path)
    assert store.kind == "sqlite" and store.path == tmp_path / "runs" / "mlflow.db"
    assert store.url == f"sqlite:///{tmp_path}/runs/mlflow.db?timeout=30"
    assert store.folder == tmp_path / "runs"


def test_the_query_never_reaches_the_lock_file_name(tmp_path):
    store = StoreURL.parse("sqlite:///optuna.db?timeout=30", tmp_path)
    with store.lock():
        (lock,) = tmp_path.glob("optuna.db.*.greenai-lock")
    assert not list(tmp_path.glob("*timeout*")) and lock.is_file()


def test_locks_of_different_steps_are_apart_and_a_step_can_nest_another(tmp_path):
    store = StoreURL.parse("sqlite:///optuna.db", tmp_path)
    with store.lock("study:s"), store.lock("create"):  # one lock file would deadlock here
        pass
    assert len(list(tmp_path.glob("optuna.db.*.greenai-lock"))) == 2


@pytest.mark.parametrize("raw", ["journal:optuna.log", "journal:///ABS/optuna.log", "journal:/ABS/optuna.log"])
def test_journal_files_relative_or_absolute(tmp_path, raw):
    store = StoreURL.parse(raw.replace("/ABS", str(tmp_path)), tmp_path)
    assert store.kind == "journal" and store.path == tmp_path / "optuna.log"
    assert store.url == f"journal:///{str(tmp_path).lstrip('/')}/optuna.log"


def test_servers_keep_their_url_and_hide_their_password():
    pg = StoreURL.parse("postgresql+psycopg://alice:s3cret@db:5432/optuna")
    assert (pg.kind, pg.backend, pg.path) == ("database", "postgresql", None)
    assert pg.url == "postgresql+psycopg://alice:s3cret@db:5432/optuna" and "s3cret" not in pg.redacted
    http = StoreURL.parse("http://bob:pw@mlflow:5000")
    assert http.kind == "http" and http.redacted == "http://bob:***@mlflow:5000"


def test_a_plain_folder_is_an_mlflow_file_store(tmp_path):
    store = StoreURL.parse("mlruns", tmp_path)
    assert (store.kind, store.path, store.folder) == ("file", tmp_path / "mlruns", tmp_path / "mlruns")
    assert StoreURL.parse(f"file://{tmp_path}/mlruns").path == tmp_path / "mlruns"


def test_the_lock_serialises_two_writers_of_one_sqlite_store(tmp_path):
    store = StoreURL.parse("sqlite:///s.db", tmp_path)
    inside: list[str] = []

    def writer(name: str) -> None:
        with store.lock():
            inside.append(f"{name}-in")
            time.sleep(0.2)
            inside.append(f"{name}-out")

    threads = [threading.Thread(target=writer, args=(n,)) for n in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert inside in (["a-in", "a-out", "b-in", "b-out"], ["b-in", "b-out", "a-in", "a-out"])


def test_an_unwritable_store_folder_is_one_line_naming_the_key(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match=r"^tracking.uri=sqlite:///.*: cannot write in "):
        check_reachable(StoreURL.parse(f"sqlite:///{blocker}/sub/mlflow.db"), "tracking.uri")


def test_an_unreachable_server_is_one_line_naming_the_key():
    with pytest.raises(ConfigError, match=r"^tracking.uri=http://127.0.0.1:9/: MLflow server not reachable"):
        check_reachable(StoreURL.parse("http://127.0.0.1:9/"), "tracking.uri")
    with pytest.raises(
        ConfigError, match=r"^sweep.storage=postgresql://u:\*\*\*@127.0.0.1:9/x: database not reachable"
    ):
        check_reachable(StoreURL.parse("postgresql://u:pw@127.0.0.1:9/x"), "sweep.storage")


def test_reachable_stores_pass(tmp_path: Path):
    check_reachable(StoreURL.parse("sqlite:///new/mlflow.db", tmp_path), "tracking.uri")
    assert (tmp_path / "new").is_dir()
