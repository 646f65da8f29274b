"""The sweep's energy ledger: the counters' total over the sweep, read by the sweeping process
alone, against the parts' own figures (trials, greenai's overhead, idle time between trials);
the unexplained remainder says how well they add up."""

from __future__ import annotations

import json
import time

import pytest
from fake_zeus import RAPLCPUs, counters_for_processes, install
from store_readers import mlflow_runs, sweep_runs, trial_runs

from greenai.energy.counters import ZeusCounters
from greenai.energy.ledger import OVERHEAD, TRIAL, CounterReader, Entry, close_ledger, covered_seconds

HOST = "host-a"


def entry(kind, what, t0, t1, joules, host=HOST, overhead=0.0):
    return Entry(kind, what, t0, t1, {"gpu": joules}, host, overhead)


# ---------------------------------------------------------------- the arithmetic


def test_the_ledger_sets_the_parts_against_the_counters_total():
    entries = [
        entry(OVERHEAD, "start-up", 0.0, 1.0, 100.0),
        entry(TRIAL, "trial 0", 1.0, 6.0, 900.0, overhead=40.0),
        entry(OVERHEAD, "close", 6.0, 6.5, 50.0),
        entry(OVERHEAD, "sweeper", 7.0, 8.0, 80.0),
    ]
    ledger = close_ledger(0.0, 10.0, {"gpu": 1500.0}, entries, between_w=120.0, host=HOST)
    # Covered 0-6.5 and 7-8: 2.5 s uncovered, at 120 W.
    assert ledger.uncovered_seconds == pytest.approx(2.5) and ledger.idle_j == pytest.approx(300.0)
    metrics = ledger.metrics()
    assert metrics["ledger_total_j"] == 1500.0 and metrics["ledger_trials_j"] == 900.0
    assert metrics["ledger_trial_overhead_j"] == 40.0 and metrics["ledger_overhead_j"] == 230.0
    assert metrics["ledger_overhead_sweeper_j"] == 80.0
    assert metrics["ledger_unexplained_j"] == pytest.approx(1500.0 - 900.0 - 230.0 - 300.0)
    assert metrics["ledger_unexplained_pct"] == pytest.approx(100 * 70.0 / 1500.0)
    assert "unexplained 70.0 J (+4.67 %)" in ledger.line() and "estimated" in ledger.line()


def test_trials_running_side_by_side_cover_their_time_once():
    assert covered_seconds([(0, 4), (1, 3), (2, 6), (8, 9)]) == 7
    ledger = close_ledger(
        0.0,
        6.0,
        {"gpu": 600.0},
        [entry(TRIAL, "trial 0", 0, 6, 300.0), entry(TRIAL, "trial 1", 0, 6, 300.0)],
        50.0,
        HOST,
    )
    assert ledger.uncovered_seconds == 0.0 and ledger.unexplained_j == 0.0 and ledger.trials == 2


def test_entries_from_other_hosts_or_outside_the_sweep_are_left_out_and_named():
    entries = [entry(TRIAL, "trial 0", 1, 2, 10.0, host="host-b"), entry(TRIAL, "trial 1", -100, -90, 10.0)]
    ledger = close_ledger(0.0, 10.0, {"gpu": 500.0}, entries, 50.0, HOST)
    assert ledger.trials_j == 0.0 and len(ledger.left_out) == 2
    assert "trial 0 ran on host-b" in ledger.left_out[0] and "outside" in ledger.left_out[1]


def test_without_a_counter_the_ledger_says_it_has_no_independent_reading():
    ledger = close_ledger(0.0, 10.0, None, [entry(TRIAL, "trial 0", 1, 9, 80.0)], 0.0, HOST)
    assert ledger.total_j is None and ledger.unexplained_j is None
    assert ledger.metrics()["ledger_unexplained_pct"] is None
    assert "no independent counter" in ledger.line()


def test_the_counter_reader_counts_rapl_wraps_between_its_readings(monkeypatch):
    rapl = RAPLCPUs(watts=400.0, dram_watts=0.0, wrap_j=200.0, poll=None)  # a wrap every 0.5 s
    install(monkeypatch, cpus=rapl)
    reader = CounterReader(ZeusCounters(None), poll=0.1)
    deadline = time.monotonic() + 30
    while rapl.wrapped() < 3:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    ended = reader.stop()
    assert ended.joules["cpu"] == pytest.approx(400.0 * (ended.time - reader.started), abs=1.0)


# ---------------------------------------------------------------- sweeps, every process on one fake counter


def ledger_of(work) -> dict[str, float]:
    (parent,) = sweep_runs(mlflow_runs(work))
    return parent.data.metrics, parent.data.tags


def sweep(greenai, tiny, *overrides, env=None):
    return greenai(
        "-m",
        *[a for a in tiny if not a.startswith("epochs=")],
        "energy=zeus",
        "device=cpu",
        "energy.idle_seconds=0.3",
        *overrides,
        extra_env=env or counters_for_processes(cpu_watts=40.0, dram_watts=5.0),
    )


def test_a_sequential_sweeps_ledger_closes_against_the_counter(greenai, tiny):
    sweep(greenai, tiny, "seed=1,2", "epochs=2")
    metrics, tags = ledger_of(greenai.cwd)
    assert tags["energy_ledger_source"] == "counters"
    # The counter draws 45 W throughout: the ledger's own reading of it.
    assert metrics["ledger_total_j"] == pytest.approx(45.0 * metrics["ledger_seconds"], rel=0.01)
    trials = trial_runs(mlflow_runs(greenai.cwd))
    assert metrics["ledger_trials_j"] == pytest.approx(sum(r.data.metrics["energy_j"] for r in trials))
    assert metrics["ledger_overhead_start-up_j"] > 0 and metrics["ledger_overhead_close_j"] > 0
    assert abs(metrics["ledger_unexplained_pct"]) <= 1.0, metrics


def test_trials_in_worker_processes_close_the_ledger_of_the_sweeping_process(greenai, tiny):
    # joblib pickles the sweep's callbacks for its workers: the ledger's reading thread must not
    # ride along; the workers' entries reach the sweeping process's ledger through the folder.
    one_at_a_time = ["searcher=random", "space=paper3", "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=1"]
    sweep(greenai, tiny, *one_at_a_time, "epochs=1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    metrics, _ = ledger_of(greenai.cwd)
    assert metrics["ledger_trials"] == 2 and abs(metrics["ledger_unexplained_pct"]) <= 1.0, metrics


def fused_pruned(greenai, tiny, env):
    """Two trials of 3 repeats as one fused group, both pruned at their first report."""
    sweep(
        greenai,
        tiny,
        "searcher=random",
        "space=paper3",
        "hydra/launcher=fused",
        "fuse=true",
        "repeats=3",
        "epochs=3",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.n_trials=2",
        "sweep.pruner={_target_:optuna.pruners.ThresholdPruner,lower:1.1}",
        env=env,
    )


def test_a_fused_sweep_pruned_with_repeats_closes_its_ledger(greenai, tiny):
    fused_pruned(greenai, tiny, counters_for_processes())
    metrics, _ = ledger_of(greenai.cwd)
    trials = trial_runs(mlflow_runs(greenai.cwd))
    assert {r.data.tags["greenai.trial_state"] for r in trials} == {"pruned"}
    assert abs(metrics["ledger_unexplained_pct"]) <= 1.0, metrics


def test_the_ledger_shows_the_joules_a_fused_runner_loses(greenai, tiny):
    """192cb76's fused runner stopped recording a trial's members at the first one pruned: the
    other repeats' share of the epoch reached no trial. The ledger, read apart from any trial,
    shows the loss as unexplained energy."""
    env = counters_for_processes()
    env["GREENAI_TEST_REPLAY"] = "fused-runner-192cb76"
    fused_pruned(greenai, tiny, env)
    metrics, _ = ledger_of(greenai.cwd)
    assert metrics["ledger_unexplained_pct"] > 5.0, json.dumps(metrics)
