"""MLflow runs as plain rows for analysis. Reading only: the report never writes a trial run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from greenai.errors import GreenAIError
from greenai.run_rows import GROSS, NET, TrialRow, row_from_run
from greenai.tracking import all_runs


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
            raise GreenAIError(
                f"report.sweep={sweep}: no sweep (parent run) with that id or name in experiment {experiment}"
            )
        runs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == sweeps[0].run_id]
    trials = [r for r in runs if r.data.tags.get("greenai.run_kind", "trial") == "trial"]
    rows, skipped = [], []
    for run in trials:
        row = row_from_run(run, energy_metric)
        missing = [k for k in ("accuracy", energy_metric) if k not in row.metrics]
        if row.state == "finished" and missing:
            why = (
                "no idle measurement (energy estimated, or an older greenai)"
                if missing == [NET]
                else "an older greenai or energy=off"
            )
            skipped.append(f"{row.name or row.run_id} (no {', '.join(missing)}: {why})")
        rows.append(row)
    if not any(r.state in ("finished", "pruned") and r.accuracy is not None for r in rows):
        where = f"sweep {sweep}" if sweep else f"experiment {experiment}"
        raise GreenAIError(f"{where}: no finished runs with an accuracy to report on")
    return RunSet(experiment, rows, sweeps, skipped)
