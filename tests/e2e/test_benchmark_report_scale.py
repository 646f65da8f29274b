"""benchmarks/report_scale.py at a tiny size: it builds its store, times every step, and its
checks hold (each report counted the runs the store held; cached reports equal fresh ones)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "report_scale.py"


def benchmark_module():
    sys.path.insert(0, str(BENCHMARK.parent))  # it imports its neighbours as the scripts do
    try:
        spec = importlib.util.spec_from_file_location("report_scale", BENCHMARK)
        module = importlib.util.module_from_spec(spec)
        sys.modules["report_scale"] = module  # dataclasses look their module up while it loads
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARK.parent))


def test_a_kept_store_is_reused_only_for_the_same_shape(tmp_path):
    bench = benchmark_module()
    db, how = bench.stored(tmp_path, bench.Shape(runs=7, sweeps=2, epochs=2))
    assert how.startswith("built in") and db.is_file()
    assert bench.stored(tmp_path, bench.Shape(runs=7, sweeps=2, epochs=2))[1] == f"reused from {tmp_path}"
    assert bench.stored(tmp_path, bench.Shape(runs=8, sweeps=2, epochs=2))[1].startswith("built in")


def test_built_runs_read_back_as_greenai_trials(tmp_path):
    from mlflow import MlflowClient

    bench = benchmark_module()
    db, _ = bench.stored(tmp_path, bench.Shape(runs=12, sweeps=3, epochs=4))
    client = MlflowClient(f"sqlite:///{db}")
    runs = client.search_runs([client.get_experiment_by_name("greenai").experiment_id])
    trials = [r for r in runs if r.data.tags["greenai.run_kind"] == "trial"]
    sweeps = {r.info.run_id for r in runs if r.data.tags["greenai.run_kind"] == "sweep"}
    assert len(trials) == 12 and len(sweeps) == 3
    assert all(r.data.tags["mlflow.parentRunId"] in sweeps for r in trials)
    done = next(r for r in trials if r.info.status == "FINISHED" and r.data.tags["greenai.trial_state"] == "finished")
    assert len(done.data.params) >= 70 and len(done.data.tags) >= 39 and len(done.data.metrics) >= 25
    history = client.get_metric_history(done.info.run_id, "test_accuracy")
    assert [m.step for m in history] == [0, 1, 2, 3]
    assert done.data.metrics["test_accuracy"] == history[-1].value, "latest value is the last epoch's"
    assert all(r.info.end_time < r.info.start_time + 4 * 6_000 + 1_000 for r in trials)


@pytest.mark.slow
def test_the_benchmark_prints_its_figures_and_its_checks_hold():
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCHMARK),
            "--runs",
            "30",
            "--sweeps",
            "3",
            "--epochs",
            "3",
            "--finished",
            "3",
            "--deleted",
            "2",
            "--check",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert re.match(r"MLflow store: 30 trial runs in 3 sweeps .* built in [\d.]+ s$", lines[0]), lines[0]
    timed = [re.search(r"  ([\d.]+) s +([\d.]+) x$", line) for line in lines]
    timed = [(float(m.group(1)), float(m.group(2))) for m in timed if m]
    assert len(timed) == 7 and all(seconds > 0 for seconds, _ in timed)
    assert timed[0][1] == 1.0, "the baseline is the unit"
    assert any("repeated report after 3 trials finished, 1 started, 2 deleted" in line for line in lines)
    assert any(
        re.match(r"  each report less the command's start-up: first -?[\d.]+ s, repeated -?[\d.]+ s and", line)
        for line in lines
    )
    assert (
        "  every report counted the trial runs the store held: True ([30, 30, 30, 32], expected [30, 30, 30, 32])"
        in lines
    )
    assert "  repeated report identical to the first: True" in lines
    assert "  last report identical to one reading every run: True" in lines
