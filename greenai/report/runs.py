"""MLflow runs as plain rows for analysis. Reading only: the report never writes a trial run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from greenai.errors import GreenAIError
from greenai.tracking import all_runs

_STATE_BY_STATUS = {"FINISHED": "finished", "FAILED": "failed", "KILLED": "killed", "RUNNING": "running"}


def _int(value: str | None) -> int | None:
    return int(value) if value is not None and value.lstrip("-").isdigit() else None


def _bool(value: str | None) -> bool | None:
    return None if value is None else value.strip().lower() in ("true", "1", "yes", "on")


@dataclass(frozen=True)
class TrialRow:
    run_id: str
    name: str
    round: int | None
    state: str  # finished, pruned, failed, killed, running
    status: str  # MLflow's own status
    accuracy: float | None
    energy_j: float | None
    seconds: float | None
    energy_source: str | None
    model: str | None = None
    dataset: str | None = None
    searcher: str | None = None
    parent_id: str | None = None
    conv_layers: int | None = None
    linear_layers: int | None = None
    relu: bool | None = None
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def estimated(self) -> bool:
        return self.energy_source in ("estimated", "partial")


GROSS, NET = "energy_j", "net_energy_j"


def row_from_run(run: Any, energy_metric: str = GROSS) -> TrialRow:
    tags, metrics, params = dict(run.data.tags), dict(run.data.metrics), dict(run.data.params)
    status = run.info.status
    state = tags.get("greenai.trial_state", _STATE_BY_STATUS.get(status, status.lower()))
    if state == "running" and status != "RUNNING":  # closed without greenai's tag (older versions)
        state = _STATE_BY_STATUS.get(status, status.lower())
    seconds = None
    if "train_seconds" in metrics:
        seconds = metrics["train_seconds"] + metrics.get("eval_seconds", 0.0)
    return TrialRow(
        run_id=run.info.run_id,
        name=run.info.run_name or "",
        round=_int(tags.get("greenai.round")),
        state=state,
        status=status,
        accuracy=metrics.get("accuracy"),
        energy_j=metrics.get(energy_metric),
        seconds=seconds,
        energy_source=tags.get("energy_source"),
        model=params.get("model.name"),
        dataset=params.get("dataset.name"),
        searcher=tags.get("greenai.searcher"),
        parent_id=tags.get("mlflow.parentRunId"),
        conv_layers=_int(params.get("conv_layers")) if params.get("model.name") == "simplecnn" else None,
        linear_layers=_int(params.get("linear_layers")),
        relu=_bool(params.get("relu")) if params.get("model.name") == "simplecnn" else None,
        params=params,
        metrics=metrics,
        tags=tags,
    )


@dataclass(frozen=True)
class SweepInfo:
    run_id: str
    name: str
    searcher: str
    search_space: str
    status: str
    tags: dict[str, str]
    metrics: dict[str, float]


def _searcher(tags: dict[str, str]) -> str:
    """The sweep's searcher; for runs from before greenai tagged it, read from its command."""
    if "greenai.searcher" in tags:
        return tags["greenai.searcher"]
    for word in tags.get("greenai.command", "").split():
        if word.startswith("searcher="):
            return word.split("=", 1)[1]
    return "unknown"


def sweep_from_run(run: Any) -> SweepInfo:
    tags = dict(run.data.tags)
    return SweepInfo(
        run_id=run.info.run_id,
        name=run.info.run_name or run.info.run_id,
        searcher=_searcher(tags),
        search_space=tags.get("greenai.search_space", ""),
        status=run.info.status,
        tags=tags,
        metrics=dict(run.data.metrics),
    )


@dataclass
class RunSet:
    """What the report reads: trial rows, sweeps, and what it had to leave out."""

    experiment: str
    rows: list[TrialRow]
    sweeps: list[SweepInfo]
    skipped: list[str] = field(default_factory=list)


def load(mlflow: Any, experiment: str, sweep: str | None = None, energy_metric: str = GROSS) -> RunSet:
    """Trial rows and sweeps of `experiment`, or of one sweep (its parent run's id or name).
    `energy_metric`: gross energy (`energy_j`) or net of idle power (`net_energy_j`)."""
    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        names = ", ".join(e.name for e in mlflow.search_experiments()) or "none"
        raise GreenAIError(f"tracking.experiment={experiment}: no such MLflow experiment (there are: {names})")
    runs = all_runs(mlflow, found.experiment_id)
    sweeps = [sweep_from_run(r) for r in runs if r.data.tags.get("greenai.run_kind") == "sweep"]
    if sweep is not None:
        sweeps = [s for s in sweeps if sweep in (s.run_id, s.name)]
        if not sweeps:
            raise GreenAIError(f"report.sweep={sweep}: no sweep (parent run) with that id or name in experiment {experiment}")
        runs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == sweeps[0].run_id]
    trials = [r for r in runs if r.data.tags.get("greenai.run_kind", "trial") == "trial"]
    rows, skipped = [], []
    for run in trials:
        row = row_from_run(run, energy_metric)
        missing = [k for k in ("accuracy", energy_metric) if k not in row.metrics]
        if row.state == "finished" and missing:
            why = "no idle measurement (energy estimated, or an older greenai)" if missing == [NET] else "an older greenai or energy=off"
            skipped.append(f"{row.name or row.run_id} (no {', '.join(missing)}: {why})")
        rows.append(row)
    if not any(r.state in ("finished", "pruned") and r.accuracy is not None for r in rows):
        where = f"sweep {sweep}" if sweep else f"experiment {experiment}"
        raise GreenAIError(f"{where}: no finished runs with an accuracy to report on")
    return RunSet(experiment, rows, sweeps, skipped)
