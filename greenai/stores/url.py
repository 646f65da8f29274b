"""Store URLs as values: the MLflow tracking URI and the Optuna study storage.

Every place that needs to know what a store is (a sqlite file, an Optuna journal file, a
database server, an MLflow server or file store) asks a `StoreURL`, parsed once. Database URLs
are parsed by SQLAlchemy's `make_url`, so a query such as `?timeout=30` stays a query and never
leaks into a lock or file name. Relative file paths are taken from the folder the command was
started in, so every job of a sweep, whatever its working folder, writes to the same store.

Syntax greenai adds on top of SQLAlchemy's: `journal:FILE` (relative) or `journal:///ABS/FILE`
for Optuna's journal-file storage.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from greenai.stores.locks import file_lock, postgres_lock
from greenai.stores.redaction import redact

JOURNAL = "journal:"
LOCK_SUFFIX = ".greenai-lock"
# The config keys that name greenai's two stores.
TRACKING_KEY, STUDY_KEY = "tracking.uri", "sweep.storage"
# The step that creates a store (MLflow and Optuna create and migrate their tables): its lock.
CREATE = "create"


@dataclass(frozen=True)
class StoreURL:
    """One store: what kind it is, the URL to hand to MLflow or Optuna, and its file if any;
    with the config key that named it, what messages about it (waits, a full disk) say."""

    url: str
    kind: str  # sqlite, journal, database (a server SQLAlchemy reaches), http, file, other
    path: Path | None = None  # the sqlite or journal file, or the MLflow file store's folder
    backend: str | None = None  # SQLAlchemy's backend name (sqlite, postgresql, mysql, ...)
    key: str = field(default="", compare=False)  # tracking.uri, sweep.storage, hydra.sweep.dir, ...

    @classmethod
    def parse(cls, raw: str, base: str | Path = ".", key: str = "") -> StoreURL:
        """Parse `raw`, taking relative file paths from `base`; `key`: the config key naming it."""
        return replace(cls._parsed(str(raw), base), key=key)

    @classmethod
    def tracking(cls, uri: str, base: str | Path) -> StoreURL:
        """The MLflow store a config's `tracking.uri` names, relative paths from the launch folder:
        the one door from config to tracking store (greenai.stores.tracking.client opens it)."""
        return cls.parse(uri, base, key=TRACKING_KEY)

    @classmethod
    def study(cls, storage: str, base: str | Path) -> StoreURL:
        """The Optuna storage a config's `sweep.storage` names, relative paths from the launch
        folder: the one door from config to study store (greenai.stores.study_storage opens it)."""
        return cls.parse(storage, base, key=STUDY_KEY)

    @classmethod
    def of_folder(cls, folder: str | Path, key: str) -> StoreURL:
        """A folder greenai writes to (Hydra's sweep or run folder), named by `key`: not a URL,
        so nothing to parse."""
        path = Path(folder).absolute()
        return cls(str(path), "file", path, key=key)

    @classmethod
    def _parsed(cls, raw: str, base: str | Path) -> StoreURL:
        if raw.startswith(JOURNAL):
            path = _absolute(raw[len(JOURNAL) :].removeprefix("//"), base)
            return cls(f"{JOURNAL}//{path}", "journal", path)
        if raw.startswith(("http://", "https://")):
            return cls(raw, "http")
        if raw.startswith("file:"):
            path = _absolute(raw[len("file:") :].removeprefix("//"), base)
            return cls(path.as_uri(), "file", path)
        if "://" not in raw:
            if ":" in raw.split("/", 1)[0]:  # a scheme MLflow knows (databricks, ...), not a path
                return cls(raw, "other")
            path = _absolute(raw, base)
            return cls(str(path), "file", path)
        return cls._database(raw, base)

    @classmethod
    def _database(cls, raw: str, base: str | Path) -> StoreURL:
        try:
            url = make_url(raw)
        except ArgumentError:
            return cls(raw, "other")
        backend = url.get_backend_name()
        if backend != "sqlite":
            return cls(raw, "database", None, backend)
        if not url.database or url.database == ":memory:":
            return cls(raw, "sqlite", None, backend)
        path = _absolute(url.database, base)
        return cls(_render(url.set(database=str(path))), "sqlite", path, backend)

    def keyed(self, key: str) -> StoreURL:
        """This store, named by `key` in messages."""
        return replace(self, key=key)

    @property
    def label(self) -> str:
        """What messages call the store: its key and URL (relative paths made absolute), any
        password hidden."""
        return f"{self.key}={self.redacted}" if self.key else self.redacted

    @property
    def file(self) -> str | None:
        """The sqlite or journal file whose lock a writer holds; None for other stores."""
        return str(self.path) if self.kind in ("sqlite", "journal") and self.path is not None else None

    @property
    def redacted(self) -> str:
        """The URL with any password hidden: what logs, params and messages show."""
        return redact(self.url)

    @property
    def folder(self) -> Path | None:
        """Where the store's files live (None for servers)."""
        if self.path is None:
            return None
        return self.path if self.kind == "file" else self.path.parent

    def lock(self, name: str = "greenai") -> contextlib.AbstractContextManager[None]:
        """The lock that serialises greenai's writers of this store for one step (creating the
        store, opening a sweep's parent run, counting then asking trials): a lock file beside a
        sqlite or journal file, an advisory lock on PostgreSQL, nothing for servers that
        serialise writes themselves (MLflow's HTTP server)."""
        lock_file = self._lock_file(name)
        if lock_file is not None:
            return file_lock(lock_file)
        if self.backend == "postgresql":
            return postgres_lock(self.url, name)
        return contextlib.nullcontext()

    def created(self) -> contextlib.AbstractContextManager[None]:
        """Held once no greenai process is creating this store file (MLflow migrates a new
        sqlite file in steps, each committed, under the CREATE lock): what it committed so far
        reads as an older schema. Nothing to wait for where no greenai process ever created the
        file (no lock file beside it), so checking a file leaves nothing new beside it."""
        lock_file = self._lock_file(CREATE)
        return file_lock(lock_file) if lock_file is not None and lock_file.exists() else contextlib.nullcontext()

    def _lock_file(self, name: str) -> Path | None:
        if self.kind not in ("sqlite", "journal") or self.path is None:
            return None
        # One lock file per step's name: flock is not re-entrant, and different steps (creating
        # the store, asking trials) need not wait for each other.
        return Path(f"{self.path}.{_short(name)}{LOCK_SUFFIX}")

    def __str__(self) -> str:
        return self.url


def _short(name: str) -> str:
    return hashlib.sha1(name.encode()).hexdigest()[:8]


def _absolute(path: str, base: str | Path) -> Path:
    return (Path(base) / Path(path).expanduser()).resolve()


def _render(url: URL) -> str:
    return url.render_as_string(hide_password=False)
