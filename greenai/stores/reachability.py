"""Can a store be reached? Checked before any training, so an unreachable MLflow server or
study database fails the command in seconds, not after MLflow's minutes of retries."""

from __future__ import annotations

import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from greenai.errors import ConfigError
from greenai.stores.health import check_store
from greenai.stores.redaction import redact
from greenai.stores.url import StoreURL

TIMEOUT_SECONDS = 5


def check_reachable(store: StoreURL, key: str) -> None:
    """Raise ConfigError naming `key` if the store cannot be used."""
    check_store(store, key)  # a store file that is damaged, foreign or too new
    if store.folder is not None:
        return _check_folder(store.folder, store.url, key)
    if store.kind == "http":
        return _check_http(store.url, key)
    if store.kind == "database":
        return _check_database(store.url, key)
    return None


def _check_folder(folder: Path, url: str, key: str) -> None:
    """The store's folder must exist or be creatable, and take a file (MLflow and Optuna
    create their files there)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ConfigError(key, redact(url), f"cannot write in {folder} ({exc.strerror or exc})") from None


def _check_http(url: str, key: str) -> None:
    silence = server_silence(url, TIMEOUT_SECONDS)
    if silence is not None:
        raise ConfigError(key, redact(url), f"MLflow server not reachable ({silence})")


def server_silence(url: str, timeout: float) -> str | None:
    """Why the MLflow server at `url` does not answer its /health, or None if it answers (the
    one probe: checked before a command trains, and by the spool before it sends kept writes).
    Any HTTP answer counts: auth and paths are MLflow's business."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None
    except (urllib.error.URLError, OSError) as exc:
        return str(getattr(exc, "reason", exc))


def _check_database(url: str, key: str) -> None:
    import sqlalchemy

    connect_args = {"connect_timeout": TIMEOUT_SECONDS} if url.startswith(("postgresql", "mysql")) else {}
    try:
        engine = sqlalchemy.create_engine(url, connect_args=connect_args, poolclass=sqlalchemy.pool.NullPool)
        with engine.connect():
            pass
        engine.dispose()
    except Exception as exc:  # drivers raise their own kinds
        message = str(exc).splitlines()[0][:200]
        raise ConfigError(
            key, redact(url), f"database not reachable ({type(exc).__name__}: {redact(message)})"
        ) from None
