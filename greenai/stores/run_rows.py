"""MLflow runs as plain values: a `RunRecord` (what greenai reads of a run, JSON-able) and a
`TrialRow` (one trial as the sweep's totals and the report see it). Reading only: nothing here
writes to MLflow or knows of sweeps or reports."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from greenai import names

_STATE_BY_STATUS = {"FINISHED": "finished", "FAILED": "failed", "KILLED": "killed", "RUNNING": "running"}
GROSS, NET = "energy_j", "net_energy_j"


@dataclass(frozen=True)
class RunRecord:
    """One MLflow run as plain values, so that it can be kept (the report's cache) and compared."""

    run_id: str
    name: str
    status: str
    start_time: int | None
    end_time: int | None
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]

    @classmethod
    def from_run(cls, run: Any) -> RunRecord:
        info, data = run.info, run.data
        return cls(
            info.run_id,
            info.run_name or "",
            info.status,
            info.start_time,
            info.end_time,
            dict(data.params),
            dict(data.metrics),
            dict(data.tags),
        )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunRecord:
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        # Not dataclasses.asdict: it deep-copies every param, tag and metric, 50 times slower.
        return {f.name: getattr(self, f.name) for f in fields(self)}


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
    # The model as a sweep over architectures names it: simplecnn, resnet18, mypkg.nets.Net.
    architecture: str | None = None
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def estimated(self) -> bool:
        return self.energy_source in ("estimated", "partial", "fused_estimated")


def trial_state(status: str, tags: dict[str, str]) -> str:
    """greenai's state of a trial (finished, pruned, failed, killed, running) from MLflow's
    status and greenai's tag."""
    state = tags.get(names.TRIAL_STATE, _STATE_BY_STATUS.get(status, status.lower()))
    if state == "running" and status != "RUNNING":  # closed without greenai's tag (older versions)
        state = _STATE_BY_STATUS.get(status, status.lower())
    return state


def architecture(params: dict[str, str]) -> str | None:
    """The model's name: the paper's model, torchvision's builder, or a user's class's import path."""
    model = params.get("model.name")
    if model == "torchvision":
        return params.get("model.arch")
    if model == "custom":
        return params.get("model._target_")
    return model


def row_from_record(record: RunRecord, energy_metric: str = GROSS) -> TrialRow:
    """`energy_metric`: gross energy (`energy_j`) or net of idle power (`net_energy_j`)."""
    tags, metrics, params = record.tags, record.metrics, record.params
    seconds = None
    if "train_seconds" in metrics:
        seconds = metrics["train_seconds"] + metrics.get("eval_seconds", 0.0)
    model = params.get("model.name")
    simplecnn = model == "simplecnn"  # conv layers and ReLU exist in SimpleCNN only
    # Beyond the paper's models the layers are counted from the module (arch.*), not configured.
    counted = model in ("torchvision", "custom")
    return TrialRow(
        run_id=record.run_id,
        name=record.name,
        round=_int(tags.get(names.ROUND)),
        state=trial_state(record.status, tags),
        status=record.status,
        accuracy=metrics.get("accuracy"),
        energy_j=metrics.get(energy_metric),
        seconds=seconds,
        energy_source=tags.get("energy_source"),
        model=params.get("model.name"),
        dataset=params.get("dataset.name"),
        searcher=tags.get(names.SEARCHER),
        parent_id=tags.get(names.PARENT),
        conv_layers=_int(params.get("arch.conv_layers" if counted else "conv_layers"))
        if simplecnn or counted
        else None,
        linear_layers=_int(params.get("arch.linear_layers" if counted else "linear_layers")),
        relu=_bool(params.get("relu")) if simplecnn else None,
        architecture=architecture(params),
        params=params,
        metrics=metrics,
        tags=tags,
    )


def row_from_run(run: Any, energy_metric: str = GROSS) -> TrialRow:
    """A trial row from an MLflow `Run` (as `search_runs` and `get_run` return them)."""
    return row_from_record(RunRecord.from_run(run), energy_metric)
