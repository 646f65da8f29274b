"""MLflow: one run per trial, one parent run per sweep; what is logged and how it is named.

Everything goes through `MlflowClient` with explicit run ids, never MLflow's global "active
run", so trials in one process (Hydra's basic launcher) and in many (joblib, Slurm) behave
the same. A run always ends FINISHED, FAILED or KILLED, never left RUNNING by an exception.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from greenai import spool, store_waits
from greenai.locks import store_lock

log = logging.getLogger(__name__)
logging.getLogger("alembic").setLevel(logging.WARNING)
logging.getLogger("mlflow.store.db.utils").addFilter(store_waits.QuietWhileWaiting())

RUN_KIND = "greenai.run_kind"  # "trial" or "sweep"
TRIAL_STATE = "greenai.trial_state"  # running, finished, failed, pruned, killed
FAILURE_REASON = "greenai.failure_reason"
PARENT = "mlflow.parentRunId"
NOTE = "mlflow.note.content"
MLFLOW_BATCH = 100  # MLflow accepts at most 100 params or tags per log_batch call
MAX_PARAM_LENGTH = 6000


def resolve_uri(uri: str, base: str | Path) -> str:
    """A relative sqlite path (`sqlite:///mlflow.db`) or journal file (`journal:optuna.log`) is
    taken from `base` (where the command was started), so every job of a sweep, whatever its
    working folder, writes to the same store."""
    for prefix in ("sqlite:///", "journal:"):
        if uri.startswith(prefix) and not uri.startswith(prefix + "/") and not uri.startswith("journal:///"):
            path = (Path(base) / uri[len(prefix) :]).resolve()
            return f"sqlite:///{path}" if prefix == "sqlite:///" else f"journal://{path}"
    return uri


def with_retries(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run an MLflow call, waiting (greenai.store_waits) while sqlite says "database is locked"
    (several workers writing one store): a locked write was rolled back, so trying again is safe."""
    store = store_waits.Store("tracking.uri", getattr(getattr(call, "__self__", None), "tracking_uri", "?"))
    return store_waits.retry(functools.partial(call, *args, **kwargs), store, ("busy",))


class RetryingClient:
    """MlflowClient whose every call goes through with_retries."""

    def __init__(self, inner: MlflowClient) -> None:
        self._inner = inner

    def __reduce__(self) -> tuple[Any, ...]:
        # Launchers pickle Hydra's callbacks (and so this client) to send them to workers.
        return (RetryingClient, (self._inner,))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "_inner":
            raise AttributeError(name)
        attr = getattr(self._inner, name)
        return functools.partial(with_retries, attr) if callable(attr) else attr


_CLIENTS: dict[str, Any] = {}


def client(uri: str) -> Any:
    """One client per store and process. A fresh sqlite store is created (MLflow runs its
    schema migrations) under a lock, so workers starting together do not race on it."""
    if uri not in _CLIENTS:
        with store_lock(uri):
            created = MlflowClient(tracking_uri=uri)
            if not spool.spools(uri):  # a server's store is the server's business
                created.search_experiments(max_results=1)  # creates and migrates the store now
        _CLIENTS[uri] = spool.spooling(RetryingClient(created), uri)
    return _CLIENTS[uri]


def experiment_id(mlflow: Any, name: str) -> str:
    """The experiment's id, creating it (artifacts next to a sqlite store) if needed."""
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    uri = mlflow.tracking_uri
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path(uri[len("sqlite:///") :]).parent / "mlruns").as_uri()
    try:
        return mlflow.create_experiment(name, artifact_location=location)
    except MlflowException:  # another worker created it first
        found = mlflow.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def _stringify(value: object) -> str:
    text = str(value)
    return text if len(text) <= MAX_PARAM_LENGTH else text[: MAX_PARAM_LENGTH - 3] + "..."


@dataclass
class RunLogger:
    """Writes to one MLflow run."""

    mlflow: Any  # RetryingClient
    run_id: str

    def params(self, values: Mapping[str, object]) -> None:
        items = [Param(k, _stringify(v)) for k, v in values.items()]
        for start in range(0, len(items), MLFLOW_BATCH):
            self.mlflow.log_batch(self.run_id, params=items[start : start + MLFLOW_BATCH])

    def tags(self, values: Mapping[str, object]) -> None:
        items = [RunTag(k, _stringify(v)) for k, v in values.items()]
        for start in range(0, len(items), MLFLOW_BATCH):
            self.mlflow.log_batch(self.run_id, tags=items[start : start + MLFLOW_BATCH])

    def metrics(self, values: Mapping[str, float | None], step: int = 0) -> None:
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in values.items() if v is not None]
        if items:
            self.mlflow.log_batch(self.run_id, metrics=items)

    def text(self, text: str, artifact_file: str) -> None:
        self.mlflow.log_text(self.run_id, text, artifact_file)


def end_state(exc: BaseException | None) -> tuple[str, str]:
    """(MLflow status, greenai trial state) for a run that ended with `exc` (None = success).

    A pruned trial stopped on purpose: FINISHED in MLflow, `pruned` in greenai's tag. The
    exception says so through a `trial_state` attribute, so this module needs no Optuna.
    """
    if exc is None:
        return "FINISHED", "finished"
    if getattr(exc, "trial_state", None) == "pruned":
        return "FINISHED", "pruned"
    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
        return "KILLED", "killed"
    return "FAILED", "failed"


def close_run(run: RunLogger, exc: BaseException | None) -> None:
    status, state = end_state(exc)
    tags: dict[str, object] = {TRIAL_STATE: state}
    if state in ("failed", "killed"):
        reason = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
        tags[FAILURE_REASON] = reason.splitlines()[0] if reason else type(exc).__name__
    run.tags(tags)
    run.mlflow.set_terminated(run.run_id, status=status)


@contextmanager
def open_run(uri: str, experiment: str, run_name: str, tags: Mapping[str, object]) -> Iterator[RunLogger]:
    """A run that is closed with the right status whatever happens inside the block."""
    mlflow = client(uri)
    exp = experiment_id(mlflow, experiment)
    created = mlflow.create_run(exp, run_name=run_name, tags={k: _stringify(v) for k, v in tags.items()})
    run = RunLogger(mlflow, created.info.run_id)
    try:
        yield run
    except BaseException as exc:
        close_run(run, exc)
        raise
    close_run(run, None)


def all_runs(mlflow: Any, experiment_id: str, filter_string: str = "") -> list:
    """Every run of the experiment that matches `filter_string`, oldest first, over all of
    MLflow's result pages."""
    runs, token = [], None
    while True:
        page = mlflow.search_runs(
            [experiment_id], filter_string=filter_string, max_results=1000, order_by=["attributes.start_time ASC"], page_token=token
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def child_runs(mlflow: Any, parent_run_id: str) -> list:
    """Every run nested under `parent_run_id`, oldest first."""
    parent = mlflow.get_run(parent_run_id)
    return all_runs(mlflow, parent.info.experiment_id, f"tags.`{PARENT}` = '{parent_run_id}'")


def find_run(mlflow: Any, experiment: str, tags: Mapping[str, str]) -> object | None:
    """The newest run of `experiment` carrying all of `tags`, if any."""
    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        return None
    clauses = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    runs = mlflow.search_runs([found.experiment_id], filter_string=clauses, max_results=1, order_by=["attributes.start_time DESC"])
    return runs[0] if runs else None
