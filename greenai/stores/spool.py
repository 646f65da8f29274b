"""MLflow writes that wait for an absent tracking server, sent once it answers again.

A tracking server (`tracking.uri=http://...`) that stops answering must not stop training, nor
lose what the trials log. The client `tracking.client` returns for such a server is wrapped in
SpoolingClient: a write the server does not take is appended to a journal in the spool folder
(`.greenai/spool/<server>/`, beside the stores the command uses in its working folder; or
$GREENAI_SPOOL_DIR) and the call returns at once; later writes go straight to the journal
while the server stays away, and every PROBE_SECONDS a write first asks the server's /health.
Once it answers, every journal in the folder is sent, in order, under the folder's lock, by
whichever greenai process gets there first: the running command, the next command using that
server (when its client is made), or `python -m greenai.sync`.

Sending again is harmless, so a journal interrupted mid-way is sent again from its last mark:
metrics keep the timestamp they were logged with (MLflow keeps one row per key, timestamp,
step and value), params are sent with the same value (MLflow takes an identical value again),
tags and statuses are overwritten with the same values. A run created while the server is away
gets a local id (`spooled-<hex>`); every run greenai creates carries it as the tag
`greenai.spool_id`, so sending its creation again, or a creation whose answer was lost, finds
the run instead of making a second. Local ids other processes hold (a parent run id in the
sweep folder, an Optuna trial's `mlflow_run_id`, a child's `mlflow.parentRunId`) are mapped to
the server's id in every call and every sent write: through the folder's ids.jsonl, or by
searching for the tag once the folder is gone.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import inspect
import json
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, Run, RunData, RunInfo, RunTag
from mlflow.exceptions import MlflowException

from greenai import names
from greenai.errors import causes
from greenai.files import write_atomic
from greenai.stores.locks import file_lock
from greenai.stores.owner import owner_alive
from greenai.stores.reachability import server_silence
from greenai.stores.redaction import redact

log = logging.getLogger(__name__)

SPOOL_DIR_ENV = "GREENAI_SPOOL_DIR"
SPOOL_TAG = names.SPOOL_ID
NOTE = "mlflow.note.content"
NOTE_PREFIX = "Spooled: "
LOCAL_PREFIX = "spooled-"
PROBE_SECONDS = 10.0
PROBE_TIMEOUT_SECONDS = 2.0
# MLflow retries a request to an absent server for about 4 minutes (7 retries, backoff factor
# 2, up to 120 s each), blocking the training loop meanwhile. greenai keeps what the server does
# not take instead, so MLflow may give up within seconds; a user's own setting wins.
HTTP_BUDGET = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
}
CREATES = ("create_experiment", "create_run")
# Client methods that write to one run, its id first.
RUN_WRITES = frozenset(
    {
        "log_batch",
        "log_text",
        "log_artifact",
        "set_terminated",
        "update_run",
        "set_tag",
        "log_metric",
        "log_param",
        "delete_tag",
    }
)
IDS_FILE = "ids.jsonl"
URI_FILE = "uri"
JOURNAL_SUFFIX = ".writes"


def spool_root() -> Path:
    return Path(os.environ.get(SPOOL_DIR_ENV) or Path.cwd() / ".greenai" / "spool").resolve()


def spool_folder(uri: str, root: Path | None = None) -> Path:
    """The folder of one server's spool: its host and port, and a hash of the whole URI (a
    password in it never reaches a file name)."""
    parts = urlsplit(uri)
    name = f"{parts.hostname or 'server'}_{parts.port or ''}-{hashlib.sha256(uri.encode()).hexdigest()[:8]}"
    return (root or spool_root()) / name


def folders(root: Path) -> list[Path]:
    """The server folders under a spool root that hold journals."""
    return sorted(p for p in root.glob("*") if p.is_dir() and any(p.glob(f"*{JOURNAL_SUFFIX}")))


def saved_uri(folder: Path) -> str | None:
    path = folder / URI_FILE
    return path.read_text().strip() if path.is_file() else None


def server_away(exc: BaseException) -> bool:
    """Whether `exc` says the server did not answer (refused, timed out, dropped, 5xx after
    MLflow's retries), as opposed to a write the server refused."""
    import requests
    import urllib3

    away = (
        requests.ConnectionError,
        requests.Timeout,
        requests.exceptions.RetryError,
        urllib3.exceptions.HTTPError,
        ConnectionError,
        TimeoutError,
    )
    return any(isinstance(error, away) for error in causes(exc))


class ServerAway(MlflowException):
    """A read from a tracking server that does not answer (writes are kept, reads cannot be)."""


# ------------------------------------------------------------ journal records


def _now_ms() -> int:
    return int(time.time() * 1000)


def _encode(value: Any) -> Any:
    if isinstance(value, Metric):
        return {"$metric": [value.key, value.value, value.timestamp, value.step]}
    if isinstance(value, Param):
        return {"$param": [value.key, value.value]}
    if isinstance(value, RunTag):
        return {"$tag": [value.key, value.value]}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, dict):
        if "$metric" in value:
            return Metric(*value["$metric"])
        if "$param" in value:
            return Param(*value["$param"])
        if "$tag" in value:
            return RunTag(*value["$tag"])
        return {k: _decode(v) for k, v in value.items()}
    return value


def _record(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """A call as a journal record: its arguments by name, with the times MLflow would fill in
    when it is sent fixed now (when it happened); creations get their local id."""
    bound = inspect.signature(getattr(MlflowClient, name)).bind(None, *args, **kwargs).arguments
    bound.pop("self", None)
    record: dict[str, Any] = {"call": name, "t": time.time(), "kwargs": bound}
    if name == "create_run":
        record["local_id"] = f"{LOCAL_PREFIX}{uuid.uuid4().hex}"
        bound["start_time"] = bound.get("start_time") or _now_ms()
        bound["tags"] = {**(bound.get("tags") or {}), SPOOL_TAG: record["local_id"]}
    elif name == "create_experiment":
        record["local_id"] = f"{LOCAL_PREFIX}experiment-{uuid.uuid4().hex}"
    elif name == "set_terminated" and bound.get("end_time") is None:
        bound["end_time"] = _now_ms()
    elif name == "log_metric":
        bound["timestamp"] = bound.get("timestamp") or _now_ms()
        bound["step"] = bound.get("step") or 0
    return record


def _sent_offset(journal: Path) -> int:
    """How far the journal has been sent (its mark, written after each record sent)."""
    mark = journal.with_name(journal.name + ".sent")
    return int(mark.read_text() or 0) if mark.is_file() else 0


def _unsent(journal: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(offset after the record, record) for each complete record past the journal's mark."""
    offset = _sent_offset(journal)
    with journal.open("rb") as handle:
        handle.seek(offset)
        data = handle.read()
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break  # its writer is still appending it
        offset += len(line)
        yield offset, json.loads(line)


def _mark(journal: Path, offset: int) -> None:
    write_atomic(journal.with_name(journal.name + ".sent"), str(offset))


def has_unsent(folder: Path) -> bool:
    return folder.is_dir() and any(next(_unsent(j), None) for j in folder.glob(f"*{JOURNAL_SUFFIX}"))


def _owner_gone(journal: Path) -> bool:
    """Whether the process that writes `journal` (named host-pid-n) has ended on this host."""
    host, _, rest = journal.name.rpartition("-pid")
    pid = rest.split("-", 1)[0]
    if pid.isdigit() and host == socket.gethostname() and int(pid) == os.getpid():
        return True  # this process, which sends under its client's lock: nothing is being added
    return owner_alive(f"{host}:{pid}") is False


# ------------------------------------------------------------ sending


@dataclass
class Sent:
    writes: int = 0
    runs: set[str] = field(default_factory=set)
    dropped: int = 0


class _Ids:
    """Local ids and the server's, from this folder's ids.jsonl, or found by the tag."""

    def __init__(self, client: Any, folder: Path, known: dict[str, str]) -> None:
        self.client, self.folder, self.known = client, folder, known

    def load(self) -> None:
        path = self.folder / IDS_FILE
        if path.is_file():
            for line in path.read_text().splitlines():
                local, _, server = line.partition(" ")
                self.known[local] = server

    def add(self, local: str, server: str) -> None:
        self.known[local] = server
        with (self.folder / IDS_FILE).open("a") as handle:
            handle.write(f"{local} {server}\n")

    def server_id(self, local: str) -> str:
        if local not in self.known:
            self.load()
        if local not in self.known and not local.startswith(f"{LOCAL_PREFIX}experiment-"):
            experiments = [e.experiment_id for e in self.client.search_experiments()]
            found = self.client.search_runs(experiments, filter_string=f"tags.`{SPOOL_TAG}` = '{local}'", max_results=1)
            if found:
                self.known[local] = found[0].info.run_id
        return self.known.get(local, local)

    def translate(self, value: Any) -> Any:
        """`value` with every local id in it replaced by the server's."""
        if isinstance(value, str):
            if LOCAL_PREFIX not in value:
                return value
            if value.startswith(LOCAL_PREFIX) and " " not in value:
                return self.server_id(value)
            for local in sorted(self.known, key=len, reverse=True):
                value = value.replace(local, self.known[local])
            return value
        if isinstance(value, RunTag):
            return value if value.key == SPOOL_TAG else RunTag(value.key, self.translate(value.value))
        if isinstance(value, (list, tuple)):
            return type(value)(self.translate(v) for v in value)
        if isinstance(value, dict):  # a run's own local id, in its tag, stays
            return {k: v if k == SPOOL_TAG else self.translate(v) for k, v in value.items()}
        return value


def _create(client: Any, record: dict[str, Any], ids: _Ids) -> str:
    """The server's id for a kept creation: found (sent before, or its answer lost) or made."""
    kwargs = ids.translate(_decode(record["kwargs"]))
    if record["call"] == "create_experiment":
        found = client.get_experiment_by_name(kwargs["name"])
        return found.experiment_id if found is not None else client.create_experiment(**kwargs)
    local = record["local_id"]
    found = client.search_runs(
        [kwargs["experiment_id"]], filter_string=f"tags.`{SPOOL_TAG}` = '{local}'", max_results=1
    )
    return found[0].info.run_id if found else client.create_run(**kwargs).info.run_id


def _refused(exc: Exception, record: dict[str, Any], sent: Sent) -> None:
    """A kept write the server refuses (its run deleted meanwhile, say) is dropped, said so,
    not kept to block the rest; a server that stops answering stops the sending."""
    if server_away(exc):
        raise exc
    sent.dropped += 1
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    log.warning("a kept MLflow write could not be sent and is dropped (%s: %s)", record["call"], reason)


def _note(client: Any, run_id: str, line: str) -> None:
    """Put `line` in the run's description, in place of an earlier spool line."""
    try:
        current = client.get_run(run_id).data.tags.get(NOTE, "")
    except Exception as exc:
        if server_away(exc):
            raise
        return  # a run whose creation was refused: nothing to describe
    kept = [text for text in current.splitlines() if not text.startswith(NOTE_PREFIX)]
    client.set_tag(run_id, NOTE, "\n".join([*kept, line]).strip())


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def send(client: Any, folder: Path, known: dict[str, str] | None = None) -> Sent:
    """Send every unsent record of every journal in `folder`, oldest journal first, under the
    folder's lock; creations first, since another process's writes may name them. A server
    that stops answering mid-way raises (what was sent stays marked); a write the server
    refuses is logged and dropped, not kept to block the rest."""
    sent = Sent()
    if not folder.is_dir():
        return sent
    with file_lock(folder.with_name(folder.name + ".lock")):
        ids = _Ids(client, folder, {} if known is None else known)
        ids.load()
        journals = sorted(folder.glob(f"*{JOURNAL_SUFFIX}"), key=lambda p: p.stat().st_mtime)
        tails = {journal: list(_unsent(journal)) for journal in journals}
        for kind in CREATES:
            for tail in tails.values():
                for _, record in tail:
                    if record["call"] == kind and record["local_id"] not in ids.known:
                        try:
                            ids.add(record["local_id"], _create(client, record, ids))
                        except Exception as exc:
                            _refused(exc, record, sent)
        times: dict[str, list[float]] = {}
        for tail in tails.values():
            for _, record in tail:
                run = record.get("local_id") if record["call"] == "create_run" else record["kwargs"].get("run_id")
                if run is not None and record["call"] != "create_experiment":
                    times.setdefault(ids.translate(run), []).append(record["t"])
        where = f"{socket.gethostname()}:{folder}"
        for run_id, moments in times.items():
            _note(
                client,
                run_id,
                f"{NOTE_PREFIX}{len(moments)} writes made from {_when(min(moments))}, while the "
                f"MLflow server did not answer, wait in {where}; they are being sent.",
            )
        for journal, tail in tails.items():
            for offset, record in tail:
                if record["call"] not in CREATES:
                    try:
                        getattr(client, record["call"])(**ids.translate(_decode(record["kwargs"])))
                    except Exception as exc:
                        _refused(exc, record, sent)
                _mark(journal, offset)
                sent.writes += 1
        for run_id, moments in times.items():
            _note(
                client,
                run_id,
                f"{NOTE_PREFIX}{len(moments)} writes made from {_when(min(moments))} to "
                f"{_when(max(moments))}, while the MLflow server did not answer, were kept in "
                f"{where} and sent at {_when(time.time())}.",
            )
        sent.runs = set(times)
        _clean(folder, journals)
    return sent


def _clean(folder: Path, journals: list[Path]) -> None:
    """Remove the journals that are sent and whose process has ended (or is this one); then,
    with no journal left, the folder (its lock file stays, so no two senders ever hold two)."""
    for journal in journals:
        if _owner_gone(journal) and _sent_offset(journal) >= journal.stat().st_size:
            journal.unlink()
            journal.with_name(journal.name + ".sent").unlink(missing_ok=True)
    if not any(folder.glob(f"*{JOURNAL_SUFFIX}")):
        shutil.rmtree(folder, ignore_errors=True)


def send_folder(uri: str, folder: Path) -> Sent:
    """`python -m greenai.sync`: send one server's spool with a plain client."""
    for name, value in HTTP_BUDGET.items():
        os.environ.setdefault(name, value)
    return send(MlflowClient(tracking_uri=uri), folder)


# ------------------------------------------------------------ the client


def _answers(uri: str) -> bool:
    return server_silence(uri, PROBE_TIMEOUT_SECONDS) is None


class SpoolingClient:
    """The tracking client for an MLflow server, whose writes are kept while it is away."""

    def __init__(self, inner: Any, uri: str, folder: Path | None = None) -> None:
        for name, value in HTTP_BUDGET.items():
            os.environ.setdefault(name, value)
        self._inner, self._uri = inner, uri
        self._folder = folder or spool_folder(uri)
        self._journal: Path | None = None
        self._ids: dict[str, str] = {}
        self._experiments: dict[str, Any] = {}
        self._away_since: float | None = None
        self._next_probe = 0.0
        self._lock = threading.RLock()
        # Writes an earlier command (or another process of this one) kept: sent now if it answers.
        if has_unsent(self._folder) and _answers(uri):
            with self._lock:
                self._try_send()
        atexit.register(self._last_try)

    def __reduce__(self) -> tuple[Any, ...]:
        # Launchers pickle Hydra's callbacks (and so this client) to send them to workers.
        return (SpoolingClient, (self._inner, self._uri, self._folder))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        attr = getattr(self._inner, name)
        return functools.partial(self._call, name) if callable(attr) else attr

    @property
    def _ids_view(self) -> _Ids:
        return _Ids(self._inner, self._folder, self._ids)

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            if name in CREATES or name in RUN_WRITES:
                return self._write(name, args, kwargs)
            return self._read(name, args, kwargs)

    def _pending(self) -> bool:
        return self._away_since is not None or (self._journal is not None and self._journal.exists())

    def _unsent(self) -> bool:
        """Whether this process's journal holds records no one has sent yet."""
        return self._journal is not None and self._journal.exists() and next(_unsent(self._journal), None) is not None

    def _write(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        record = _record(name, args, kwargs)
        if self._pending() and not self._try_send():
            return self._keep(record)
        try:
            result = getattr(self._inner, name)(**self._ids_view.translate(record["kwargs"]))
        except Exception as exc:
            if not server_away(exc):
                raise
            self._went_away(exc)
            return self._keep(record)
        if name == "create_run":
            self._ids[record["local_id"]] = result.info.run_id
        return result

    def _read(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        # A read cannot be kept for later: ask the server now rather than at the next probe.
        self._next_probe = 0.0
        if not self._pending() or self._try_send():
            try:
                result = getattr(self._inner, name)(*self._ids_view.translate(args), **self._ids_view.translate(kwargs))
            except Exception as exc:
                if not server_away(exc):
                    raise
                self._went_away(exc)
            else:
                if name == "get_experiment_by_name" and result is not None:
                    self._experiments[result.name] = result
                return result
        if name == "get_experiment_by_name":  # experiment_id() while away: the one seen, or None (then made)
            return self._experiments.get(args[0] if args else kwargs.get("name"))
        raise ServerAway(
            f"tracking.uri={redact(self._uri)}: the MLflow server does not answer; "
            f"writes are kept in {self._folder}, reads cannot be"
        )

    def _keep(self, record: dict[str, Any]) -> Any:
        """Append the record to this process's journal; answer as the server would have."""
        kwargs = record["kwargs"]
        if self._journal is None or not self._journal.exists():
            # Under the folder's lock: a sender that found no journal may be removing the folder.
            self._folder.parent.mkdir(parents=True, exist_ok=True)
            with file_lock(self._folder.with_name(self._folder.name + ".lock")):
                self._folder.mkdir(exist_ok=True)
                (self._folder / URI_FILE).write_text(redact(self._uri) + "\n")
                stamp = f"{time.time_ns()}-{id(self)}"
                self._journal = self._folder / f"{socket.gethostname()}-pid{os.getpid()}-{stamp}{JOURNAL_SUFFIX}"
                self._journal.touch()
        if record["call"] == "log_artifact":  # the file may be gone by the time it is sent
            copy = self._folder / "files" / uuid.uuid4().hex / Path(kwargs["local_path"]).name
            copy.parent.mkdir(parents=True)
            shutil.copy2(kwargs["local_path"], copy)
            kwargs["local_path"] = str(copy)
        with self._journal.open("a") as handle:
            handle.write(json.dumps({**record, "kwargs": _encode(kwargs)}) + "\n")
        if record["call"] == "create_run":
            info = RunInfo(
                record["local_id"],
                kwargs["experiment_id"],
                "",
                "RUNNING",
                kwargs["start_time"],
                None,
                "active",
                None,
                kwargs.get("run_name"),
            )
            tags = [RunTag(k, str(v)) for k, v in kwargs["tags"].items()]
            return Run(info, RunData(tags=tags))
        if record["call"] == "create_experiment":
            return record["local_id"]
        return None

    def _went_away(self, exc: BaseException) -> None:
        self._next_probe = time.monotonic() + PROBE_SECONDS
        if self._away_since is None:
            self._away_since = time.monotonic()
            reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
            log.warning(
                "tracking.uri=%s: the MLflow server does not answer (%s); training goes on, its MLflow "
                "writes are kept in %s and sent when the server answers",
                redact(self._uri),
                reason,
                self._folder,
            )

    def _try_send(self) -> bool:
        """Send what waits; while the server is away, only once its /health answers (asked at
        most every PROBE_SECONDS, so a write costs no wait meanwhile)."""
        if self._away_since is not None:
            if time.monotonic() < self._next_probe:
                return False
            if not _answers(self._uri):
                self._next_probe = time.monotonic() + PROBE_SECONDS
                return False
        try:
            sent = send(self._inner, self._folder, self._ids)
        except Exception as exc:
            if not server_away(exc):
                # Logging never stops training: what could not be sent stays kept.
                log.warning("kept MLflow writes could not be sent (%s); they stay in %s", exc, self._folder)
            self._went_away(exc)
            return False
        if sent.writes:
            after = f" after {time.monotonic() - self._away_since:.0f} s" if self._away_since is not None else ""
            log.info(
                "tracking.uri=%s answers%s: sent %d kept writes of %d runs%s",
                redact(self._uri),
                after,
                sent.writes,
                len(sent.runs),
                f" ({sent.dropped} refused, dropped)" if sent.dropped else "",
            )
        self._away_since = None
        return True

    def _last_try(self) -> None:
        """At exit: one more try, then say where the kept writes wait and how they get sent."""
        with self._lock:
            if not self._unsent():
                return
            self._next_probe = 0.0
            if self._try_send() and not self._unsent():
                return
            log.warning(
                "tracking.uri=%s still does not answer: MLflow writes wait in %s; the next greenai "
                "command using this server sends them, or `python -m greenai.sync`",
                redact(self._uri),
                self._folder,
            )
