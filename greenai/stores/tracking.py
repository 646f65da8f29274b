"""MLflow: the client, runs that always end with the right status, and searches over runs.

Everything goes through `MlflowClient` with explicit run ids, never MLflow's global "active
run", so trials in one process (Hydra's basic launcher) and in many (joblib, Slurm, a fused
group) behave the same. Runs are created with MLflow's own context tags (user, source, git
commit), as `mlflow.start_run` would. A run always ends FINISHED, FAILED or KILLED, never left
RUNNING by an exception; one a killed process left RUNNING is closed the next time a greenai
command opens its store.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking.context.registry import resolve_tags

from greenai import names
from greenai.errors import Interrupted, failure_reason
from greenai.stores import spool
from greenai.stores import waits as store_waits
from greenai.stores.owner import owner_alive
from greenai.stores.url import CREATE, TRACKING_KEY, StoreURL

log = logging.getLogger(__name__)
logging.getLogger("alembic").setLevel(logging.WARNING)
# MLflow logs every locked attempt at ERROR with a traceback; greenai says once that it waits.
logging.getLogger("mlflow.store.db.utils").addFilter(store_waits.QuietWhileWaiting())

# MLflow 3's UI opens an experiment on its GenAI overview unless the experiment says it holds
# model training runs.
EXPERIMENT_KIND = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"


def with_retries(store: StoreURL, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run an MLflow call on `store`, waiting (greenai.stores.waits) while sqlite says "database
    is locked" (several workers writing one store): a locked write was rolled back, so trying
    again is safe."""
    return store_waits.retry(functools.partial(call, *args, **kwargs), store, ("busy",))


class RetryingClient:
    """MlflowClient whose every call goes through with_retries; `store` is the store it writes to."""

    def __init__(self, inner: MlflowClient, store: StoreURL) -> None:
        self._inner, self.store = inner, store

    def __reduce__(self) -> tuple[Any, ...]:
        # Launchers pickle Hydra's callbacks (and so this client) to send them to workers.
        return (RetryingClient, (self._inner, self.store))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "_inner":
            raise AttributeError(name)
        attr = getattr(self._inner, name)
        return functools.partial(with_retries, self.store, attr) if callable(attr) else attr


_CLIENTS: dict[str, Any] = {}


def client(store: StoreURL) -> Any:
    """One client per store and process. A fresh sqlite store is created (MLflow runs its
    schema migrations) under the store's lock, so workers starting together do not race on it;
    runs that dead processes of this host left RUNNING are closed then."""
    if store.url not in _CLIENTS:
        with store.lock(CREATE):
            created = MlflowClient(tracking_uri=store.url)
            if store.kind != "http":  # a server's store is the server's business
                created.search_experiments(max_results=1)  # creates and migrates the store now
        # A tracking server that goes away: writes wait in a local spool (greenai.stores.spool).
        retrying = RetryingClient(created, store.keyed(TRACKING_KEY))
        _CLIENTS[store.url] = spool.SpoolingClient(retrying, store.url) if store.kind == "http" else retrying
        close_dead_runs(_CLIENTS[store.url])
    return _CLIENTS[store.url]


def experiment_id(mlflow: Any, name: str) -> str:
    """The experiment's id, creating it (artifacts next to a sqlite store) if needed, marked as
    an experiment of model-training runs."""
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    store = mlflow.store
    location = (store.folder / "mlruns").as_uri() if store.kind == "sqlite" and store.folder else None
    try:
        return mlflow.create_experiment(name, artifact_location=location, tags={EXPERIMENT_KIND: MODEL_TRAINING})
    except MlflowException:  # another worker created it first
        found = mlflow.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


@dataclass
class RunLogger:
    """Writes to one MLflow run. MLflow's log_batch splits large batches and truncates long
    values itself."""

    mlflow: Any  # RetryingClient
    run_id: str

    def params(self, values: Mapping[str, object]) -> None:
        self.mlflow.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in values.items()])

    def tags(self, values: Mapping[str, object]) -> None:
        self.mlflow.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in values.items()])

    def metrics(self, values: Mapping[str, float | None], step: int = 0) -> None:
        self.mlflow.log_batch(self.run_id, metrics=metric_points(values, step))

    def text(self, text: str, artifact_file: str) -> None:
        self.mlflow.log_text(self.run_id, text, artifact_file)

    def log(
        self,
        params: Mapping[str, object] | None = None,
        metrics: list[Metric] | None = None,
        tags: Mapping[str, object] | None = None,
    ) -> None:
        """Params, metrics (at their steps) and tags in one batch: one write to the store."""
        self.mlflow.log_batch(
            self.run_id,
            metrics=metrics or [],
            params=[Param(k, str(v)) for k, v in (params or {}).items()],
            tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
        )


def metric_points(values: Mapping[str, float | None], step: int = 0) -> list[Metric]:
    now = int(time.time() * 1000)
    return [Metric(k, float(v), now, step) for k, v in values.items() if v is not None]


def end_state(exc: BaseException | None) -> tuple[str, str]:
    """(MLflow status, greenai trial state) for a run that ended with `exc` (None = success).

    A pruned trial stopped on purpose: FINISHED in MLflow, `pruned` in greenai's tag. One
    stopped from outside (a signal, a store's disk full) is KILLED. The exception says so through
    a `trial_state` attribute, so this module needs no Optuna.
    """
    if exc is None:
        return "FINISHED", "finished"
    if getattr(exc, "trial_state", None) == "pruned":
        return "FINISHED", "pruned"
    if isinstance(exc, (KeyboardInterrupt, SystemExit)) or getattr(exc, "trial_state", None) == "killed":
        return "KILLED", "killed"
    return "FAILED", "failed"


def ending_tags(exc: BaseException | None) -> dict[str, object]:
    """The tags that say how a run ended (its greenai state, and why if it failed)."""
    state = end_state(exc)[1]
    tags: dict[str, object] = {names.TRIAL_STATE: state}
    if exc is not None and state in ("failed", "killed"):
        tags[names.FAILURE_REASON] = failure_reason(exc)
    return tags


def close_run(run: RunLogger, exc: BaseException | None) -> None:
    """End the run with the status `exc` implies."""
    run.tags(ending_tags(exc))
    terminate(run, exc)


def terminate(run: RunLogger, exc: BaseException | None) -> None:
    run.mlflow.set_terminated(run.run_id, status=end_state(exc)[0])


def create_run(mlflow: Any, experiment: str, run_name: str, tags: Mapping[str, object]) -> RunLogger:
    """A new run, with MLflow's context tags (user, source, git commit) under greenai's own."""
    exp = experiment_id(mlflow, experiment)
    context = resolve_tags({k: str(v) for k, v in tags.items()})
    return RunLogger(mlflow, mlflow.create_run(exp, run_name=run_name, tags=context).info.run_id)


@contextmanager
def open_run(store: StoreURL, experiment: str, run_name: str, tags: Mapping[str, object]) -> Iterator[RunLogger]:
    """A run that is closed with the right status whatever happens inside the block."""
    run = create_run(client(store), experiment, run_name, tags)
    try:
        yield run
    except BaseException as exc:
        close_run(run, exc)
        raise
    close_run(run, None)


def all_runs(
    mlflow: Any, experiment_ids: str | list[str], filter_string: str = "", view: int = ViewType.ACTIVE_ONLY
) -> list:
    """Every run of the experiment(s) that matches `filter_string`, oldest first, over all of
    MLflow's result pages; `view`: active runs (MLflow's default), deleted ones, or all."""
    experiment_ids = [experiment_ids] if isinstance(experiment_ids, str) else experiment_ids
    runs, token = [], None
    while True:
        page = mlflow.search_runs(
            experiment_ids,
            filter_string=filter_string,
            run_view_type=view,
            max_results=1000,
            order_by=["attributes.start_time ASC"],
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def child_runs(mlflow: Any, parent_run_id: str) -> list:
    """Every run nested under `parent_run_id`, oldest first."""
    parent = mlflow.get_run(parent_run_id)
    return all_runs(mlflow, [parent.info.experiment_id], f"tags.`{names.PARENT}` = '{parent_run_id}'")


def find_run(mlflow: Any, experiment: str, tags: Mapping[str, str]) -> object | None:
    """The newest run of `experiment` carrying all of `tags`, if any."""
    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        return None
    clauses = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    runs = mlflow.search_runs(
        [found.experiment_id], filter_string=clauses, max_results=1, order_by=["attributes.start_time DESC"]
    )
    return runs[0] if runs else None


def close_dead_runs(mlflow: Any) -> int:
    """Close KILLED the runs a dead process of this host left RUNNING, outside Optuna sweeps
    (a sweep's parent run settles its own children with what the study knows of them)."""
    try:
        experiments = [e.experiment_id for e in mlflow.search_experiments()]
        running = all_runs(mlflow, experiments, "attributes.status = 'RUNNING'") if experiments else []
    except Exception as exc:  # a store we cannot search (a server away) is no reason to stop here
        log.debug("cannot look for dead runs: %s", exc)
        return 0
    dead = [
        r
        for r in running
        if names.TRIAL_NUMBER not in r.data.tags and owner_alive(r.data.tags.get(names.OWNER)) is False
    ]
    for run in dead:
        close_run(RunLogger(mlflow, run.info.run_id), Interrupted("its process ended without closing the run"))
        log.warning(
            "run %s (%s) was left running by a process that ended: closed as KILLED", run.info.run_name, run.info.run_id
        )
    return len(dead)
