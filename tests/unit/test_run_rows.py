"""MLflow runs as plain records and trial rows."""

from __future__ import annotations

from types import SimpleNamespace

from greenai.stores.run_rows import NET, RunRecord, row_from_record, row_from_run, trial_state


def record(status="FINISHED", params=None, metrics=None, tags=None):
    return RunRecord("abc", "trial-1", status, 1000, 2000, params or {}, metrics or {}, tags or {})


def test_a_record_round_trips_through_a_plain_dict():
    rec = record(params={"lr": "0.001"}, metrics={"accuracy": 0.9}, tags={"greenai.round": "3"})
    assert RunRecord.from_dict(rec.to_dict()) == rec


def test_a_record_reads_an_mlflow_run_without_keeping_mlflow_objects():
    run = SimpleNamespace(
        info=SimpleNamespace(run_id="r1", run_name=None, status="KILLED", start_time=5, end_time=9),
        data=SimpleNamespace(params={"a": "1"}, metrics={"m": 2.0}, tags={"t": "x"}),
    )
    rec = RunRecord.from_run(run)
    assert (rec.run_id, rec.name, rec.status, rec.start_time, rec.end_time) == ("r1", "", "KILLED", 5, 9)
    assert type(rec.params) is dict and rec.metrics == {"m": 2.0} and rec.tags == {"t": "x"}
    assert row_from_run(run).state == "killed"


def test_greenai_state_tag_wins_over_mlflow_status():
    assert trial_state("FINISHED", {"greenai.trial_state": "pruned"}) == "pruned"
    assert trial_state("FAILED", {}) == "failed"
    # a run an older greenai closed without updating its tag is not left "running"
    assert trial_state("KILLED", {"greenai.trial_state": "running"}) == "killed"
    assert trial_state("RUNNING", {"greenai.trial_state": "running"}) == "running"


def test_row_reads_figures_layers_and_energy_choice():
    rec = record(
        params={"model.name": "simplecnn", "conv_layers": "3", "linear_layers": "4", "relu": "False"},
        metrics={"accuracy": 0.8, "energy_j": 100.0, "net_energy_j": 60.0, "train_seconds": 4.0, "eval_seconds": 1.0},
        tags={"greenai.round": "7", "energy_source": "partial", "mlflow.parentRunId": "p"},
    )
    row = row_from_record(rec)
    assert (row.round, row.conv_layers, row.linear_layers, row.relu) == (7, 3, 4, False)
    assert (row.accuracy, row.energy_j, row.seconds, row.parent_id) == (0.8, 100.0, 5.0, "p")
    assert row.estimated, "partial energy is partly estimated"
    assert row_from_record(rec, NET).energy_j == 60.0


def test_conv_layers_and_relu_belong_to_simplecnn_only():
    row = row_from_record(record(params={"model.name": "densepoly", "conv_layers": "2", "relu": "true"}))
    assert row.conv_layers is None and row.relu is None
