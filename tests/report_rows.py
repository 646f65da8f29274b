"""Trial rows and run sets made by hand, for the report's tests: small, and each value chosen."""

from __future__ import annotations

from greenai.report.runs import RunSet, SweepInfo
from greenai.stores.run_rows import TrialRow


def trial(
    round_: int | None,
    accuracy: float | None,
    energy: float | None,
    state: str = "finished",
    source: str | None = "measured",
    parent: str | None = None,
    conv: int | None = None,
    linear: int | None = None,
    relu: bool | None = None,
    params: dict | None = None,
    metrics: dict | None = None,
    tags: dict | None = None,
) -> TrialRow:
    status = {"pruned": "FINISHED", "running": "RUNNING"}.get(state, state.upper())
    return TrialRow(
        f"id{round_}-{parent}",
        f"run{round_}",
        round_,
        state,
        status,
        accuracy,
        energy,
        1.0,
        source,
        model="simplecnn",
        dataset="fashion_mnist",
        parent_id=parent,
        conv_layers=conv,
        linear_layers=linear,
        relu=relu,
        params=params or {},
        metrics=metrics or {},
        tags=tags or {},
    )


def sweep(run_id: str, searcher: str = "tpe", space: str = "lr") -> SweepInfo:
    return SweepInfo(run_id, f"sweep-{run_id}", searcher, space, "FINISHED", {}, {})


def run_set(rows: list[TrialRow], sweeps: list[SweepInfo] | None = None, skipped: list[str] | None = None) -> RunSet:
    return RunSet("exp", rows, sweeps or [], skipped or [])
