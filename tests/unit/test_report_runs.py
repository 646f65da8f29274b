"""Which runs a report is about: trials and sweeps of an experiment or of one sweep, and what is
left out of the figures, chosen among plain run records."""

from __future__ import annotations

import pytest

from greenai.errors import GreenAIError
from greenai.report.runs import select
from greenai.stores.run_rows import GROSS, NET, RunRecord


def record(run_id, kind="trial", parent=None, status="FINISHED", metrics=None, tags=None):
    base = {"greenai.run_kind": kind} if kind else {}
    if parent:
        base["mlflow.parentRunId"] = parent
    metrics = {"accuracy": 0.8, "energy_j": 10.0} if metrics is None else metrics
    return RunRecord(run_id, f"name-{run_id}", status, 0, 1, {}, metrics, base | (tags or {}))


def experiment():
    return [
        record("s1", "sweep", tags={"greenai.command": "searcher=tpe space=paper3"}),
        record("s2", "sweep", tags={"greenai.searcher": "random"}),
        record("a", parent="s1"),
        record("b", parent="s2"),
        record("c", parent="s2", status="FAILED", metrics={}),
        record("untagged", kind=None),
    ]


def test_an_experiment_report_takes_every_trial_and_every_sweep():
    runs = select("exp", experiment(), None, GROSS)
    assert [r.run_id for r in runs.rows] == ["a", "b", "c", "untagged"], "runs of older greenai count as trials"
    assert [(s.run_id, s.searcher) for s in runs.sweeps] == [("s1", "tpe"), ("s2", "random")]


@pytest.mark.parametrize("chosen", ["s2", "name-s2"])
def test_a_sweep_report_takes_that_sweeps_trials_by_id_or_name(chosen):
    runs = select("exp", experiment(), chosen, GROSS)
    assert [r.run_id for r in runs.rows] == ["b", "c"] and [s.run_id for s in runs.sweeps] == ["s2"]


def test_an_unknown_sweep_or_no_finished_trial_is_a_one_line_error():
    with pytest.raises(GreenAIError, match="^report.sweep=nope: no sweep"):
        select("exp", experiment(), "nope", GROSS)
    with pytest.raises(GreenAIError, match="^experiment exp: no finished runs with an accuracy"):
        select("exp", [record("x", status="FAILED", metrics={})], None, GROSS)


def test_finished_trials_missing_a_metric_are_noted_as_skipped():
    records = [record("ok"), record("old", metrics={"accuracy": 0.5}), record("failed", status="FAILED", metrics={})]
    assert select("exp", records, None, GROSS).skipped == ["name-old (no energy_j: an older greenai or energy=off)"]
    net = select("exp", records, None, NET).skipped
    assert net[0] == "name-ok (no net_energy_j: no idle measurement (energy estimated, or an older greenai))"
