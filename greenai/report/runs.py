"""MLflow runs as plain rows for analysis (read only)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


_STATE_BY_STATUS = {"FINISHED": "finished", "FAILED": "failed", "KILLED": "killed", "RUNNING": "running"}


def row_from_run(run: Any) -> TrialRow:
    tags, metrics = dict(run.data.tags), dict(run.data.metrics)
    status = run.info.status
    state = tags.get("greenai.trial_state", _STATE_BY_STATUS.get(status, status.lower()))
    if state == "running" and status != "RUNNING":  # closed without greenai's tag (older versions)
        state = _STATE_BY_STATUS.get(status, status.lower())
    round_tag = tags.get("greenai.round")
    return TrialRow(
        run_id=run.info.run_id,
        name=run.info.run_name or "",
        round=int(round_tag) if round_tag and round_tag.isdigit() else None,
        state=state,
        status=status,
        accuracy=metrics.get("accuracy"),
        energy_j=metrics.get("energy_j"),
        seconds=(metrics.get("train_seconds") or 0.0) + (metrics.get("eval_seconds") or 0.0) if "train_seconds" in metrics else None,
        energy_source=tags.get("energy_source"),
        params=dict(run.data.params),
        metrics=metrics,
        tags=tags,
    )
