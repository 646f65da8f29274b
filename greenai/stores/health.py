"""Is a store file sound, and the kind of store its key takes? Checked before anything runs.

A truncated or foreign sqlite file, a schema written by a newer MLflow or Optuna, or a journal
that Optuna cannot read would otherwise fail deep inside the library, after greenai had opened
(or reopened and then failed) MLflow runs. Each check asks the library's own notion: sqlite's
header and `PRAGMA quick_check`, the alembic revision in the file against the migration scripts
the installed MLflow or Optuna ships, Optuna's own journal reader. Files are opened read-only,
and files not yet created pass: MLflow and Optuna create them.
"""

from __future__ import annotations

import sqlite3
import time
from functools import cache
from importlib import metadata
from pathlib import Path
from urllib.parse import quote

from greenai.errors import ConfigError
from greenai.stores import waits as store_waits
from greenai.stores.url import StoreURL

SQLITE_HEADER = b"SQLite format 3\x00"
# The store each key takes, and a table only that kind of store has.
KINDS = {"tracking.uri": "mlflow", "sweep.storage": "optuna"}
NAMES = {"mlflow": "MLflow", "optuna": "Optuna"}
OWN_TABLE = {"mlflow": "experiments", "optuna": "studies"}
FOREIGN = {"mlflow": "an MLflow tracking database", "optuna": "an Optuna study database"}


def check_store(store: StoreURL, key: str) -> None:
    """Raise ConfigError naming `key`, the file and what is wrong with the store file at `store`;
    other stores (servers, folders) and absent or empty files pass."""
    shown, store = store.redacted, store.keyed(key)
    if store.file is None or not Path(store.file).is_file() or Path(store.file).stat().st_size == 0:
        return
    path = Path(store.file)
    problem = _journal_problem(path) if store.kind == "journal" else _settled_sqlite_problem(path, store)
    if problem:
        raise ConfigError(key, shown, f"{path} {problem}")


def _settled_sqlite_problem(path: Path, store: StoreURL) -> str | None:
    """What is wrong with the sqlite file, judged once any greenai worker creating it is done:
    a worker starting alongside it would otherwise read a schema migrated halfway as older."""

    def problem() -> str | None:
        return store_waits.retry(lambda: _sqlite_problem(path, KINDS.get(store.key)), store, ("busy",))

    if problem() is None:
        return None
    with store.created():
        return problem()


def _sqlite_problem(path: Path, kind: str | None) -> str | None:
    with path.open("rb") as handle:
        head = handle.read(len(SQLITE_HEADER))
    if head != SQLITE_HEADER:
        read, problem = _replay_journal(path)
        if read and problem is None:
            return "is an Optuna journal file, not an SQLite database (name it journal:PATH)"
        return f"is not an SQLite database (it begins {head[:16]!r})"
    connection = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=5)
    try:
        try:
            found = connection.execute("PRAGMA quick_check").fetchall()
        except sqlite3.DatabaseError as exc:
            if "locked" in str(exc):
                raise
            return f"is truncated or damaged (sqlite: {exc}); restore it from a backup or move it aside"
        if found != [("ok",)]:
            return f"is damaged (sqlite's quick_check: {found[0][0]}); restore it from a backup or move it aside"
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        revision = None
        if "alembic_version" in tables:
            row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
            revision = row[0] if row else None
    finally:
        connection.close()
    if kind is None:
        return None
    if revision is not None:
        return _schema_problem(revision, kind)
    if tables and OWN_TABLE[kind] not in tables:
        listed = ", ".join(sorted(tables)[:5])
        return f"is an SQLite database, but not {FOREIGN[kind]} (its tables: {listed})"
    return None


def _schema_problem(revision: str, kind: str) -> str | None:
    """The file's alembic revision against the migrations the installed library knows."""
    known, heads = _revisions(kind)
    name, version = NAMES[kind], metadata.version(kind)
    if revision in heads:
        return None
    if revision in known:
        upgrade = "mlflow db upgrade URL" if kind == "mlflow" else "optuna storage upgrade --storage URL"
        return (
            f"has the schema of an older {name} (revision {revision}; {name} {version} needs {heads[0]}): "
            f"back it up, then run `{upgrade}`"
        )
    other = "optuna" if kind == "mlflow" else "mlflow"
    if revision in _revisions(other)[0]:
        return f"is {FOREIGN[other]}, not {FOREIGN[kind]}"
    return (
        f"has schema revision {revision}, unknown to the installed {name} {version} (newest it knows: {heads[0]}): "
        f"written by a newer {name}? upgrade {name}, or use another file"
    )


@cache
def _revisions(kind: str) -> tuple[frozenset[str], tuple[str, ...]]:
    """Every revision and the head(s) of the alembic migrations the installed library ships
    (the scripts MLflow and Optuna migrate their own databases with)."""
    from alembic.script import ScriptDirectory

    if kind == "mlflow":
        import mlflow.store

        folder = Path(mlflow.store.__file__).parent / "db_migrations"
    else:
        import optuna.storages

        folder = Path(optuna.storages.__file__).parent / "_rdb" / "alembic"
    scripts = ScriptDirectory(str(folder))
    return frozenset(r.revision for r in scripts.walk_revisions()), tuple(scripts.get_heads())


def _journal_problem(path: Path) -> str | None:
    """Whether Optuna's own journal reader takes the file: every complete line a log it replays."""
    with path.open("rb") as handle:
        head = handle.read(len(SQLITE_HEADER))
    if head == SQLITE_HEADER:
        return "is an SQLite database, not an Optuna journal (name it sqlite:///PATH)"
    read, problem = _replay_journal(path)
    if read == 0 and problem is None:
        time.sleep(0.2)  # another worker may be appending the study's first log right now
        read, problem = _replay_journal(path)
        if read == 0:
            problem = "Optuna reads no log from it"
    return f"is not an Optuna journal ({problem})" if problem else None


def _replay_journal(path: Path) -> tuple[int, str | None]:
    """(logs Optuna reads, what stops it), by Optuna's journal reader and replay."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    lines = path.read_bytes().count(b"\n")
    backend = JournalFileBackend(str(path))  # the file exists, so nothing is created
    try:
        read = sum(1 for _ in backend.read_logs(0))
        JournalStorage(backend)  # replays every log, as the sweep will
    except Exception as exc:  # Optuna raises what JSON and its replay raise
        first = (str(exc).splitlines() or [""])[0][:120]
        return 0, f"Optuna cannot replay it: {type(exc).__name__}: {first}"
    if read < lines:
        # Optuna leaves an unreadable last line to a writer still appending it; a line that
        # already has its newline is finished, so it is no journal log.
        return read, f"line {read + 1} is not a journal log"
    return read, None
