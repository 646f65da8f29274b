"""Which runs a report is about: the trial rows and sweeps of an experiment, or of one sweep,
and what had to be left out. Reading only: the report never writes a trial run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from greenai import names
from greenai.errors import GreenAIError
from greenai.report.run_cache import Reading, read_runs
from greenai.stores.run_rows import GROSS, NET, RunRecord, TrialRow, row_from_record


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
    if names.SEARCHER in tags:
        return tags[names.SEARCHER]
    for word in tags.get(names.COMMAND, "").split():
        if word.startswith("searcher="):
            return word.split("=", 1)[1]
    return "unknown"


def sweep_from_record(record: RunRecord) -> SweepInfo:
    tags = record.tags
    return SweepInfo(
        run_id=record.run_id,
        name=record.name or record.run_id,
        searcher=_searcher(tags),
        search_space=tags.get(names.SEARCH_SPACE, ""),
        status=record.status,
        tags=tags,
        metrics=record.metrics,
    )


@dataclass
class RunSet:
    """What the report reads: trial rows, sweeps, what it had to leave out, and how it read them."""

    experiment: str
    rows: list[TrialRow]
    sweeps: list[SweepInfo]
    skipped: list[str] = field(default_factory=list)
    reading: Reading = field(default_factory=Reading)


def load(
    mlflow: Any, experiment: str, sweep: str | None = None, energy_metric: str = GROSS, cache_file: Path | None = None
) -> RunSet:
    """Trial rows and sweeps of `experiment`, or of one sweep (its parent run's id or name).
    `energy_metric`: gross energy (`energy_j`) or net of idle power (`net_energy_j`);
    `cache_file`: where the runs read are kept between reports (None: read every run)."""
    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        names = ", ".join(e.name for e in mlflow.search_experiments()) or "none"
        raise GreenAIError(f"tracking.experiment={experiment}: no such MLflow experiment (there are: {names})")
    records, reading = read_runs(mlflow, found.experiment_id, cache_file)
    runs = select(experiment, records, sweep, energy_metric)
    runs.reading = reading
    return runs


def select(experiment: str, records: Sequence[RunRecord], sweep: str | None, energy_metric: str) -> RunSet:
    """The report's runs among an experiment's `records` (oldest first)."""
    sweeps = [sweep_from_record(r) for r in records if r.tags.get(names.RUN_KIND) == "sweep"]
    if sweep is not None:
        sweeps = [s for s in sweeps if sweep in (s.run_id, s.name)]
        if not sweeps:
            raise GreenAIError(
                f"report.sweep={sweep}: no sweep (parent run) with that id or name in experiment {experiment}"
            )
        records = [r for r in records if r.tags.get(names.PARENT) == sweeps[0].run_id]
    trials = [r for r in records if r.tags.get(names.RUN_KIND, "trial") == "trial"]
    rows = [row_from_record(r, energy_metric) for r in trials]
    if not any(r.state in ("finished", "pruned") and r.accuracy is not None for r in rows):
        where = f"sweep {sweep}" if sweep else f"experiment {experiment}"
        raise GreenAIError(f"{where}: no finished runs with an accuracy to report on")
    return RunSet(experiment, rows, sweeps, [note for row in rows if (note := skip_note(row, energy_metric))])


def skip_note(row: TrialRow, energy_metric: str) -> str | None:
    """Why a finished trial is left out of the figures (a metric missing), or None."""
    missing = [k for k in ("accuracy", energy_metric) if k not in row.metrics]
    if row.state != "finished" or not missing:
        return None
    why = (
        "no idle measurement (energy estimated, or an older greenai)"
        if missing == [NET]
        else "an older greenai or energy=off"
    )
    return f"{row.name or row.run_id} (no {', '.join(missing)}: {why})"
