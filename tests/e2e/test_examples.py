"""The example project (examples/your-own-loop/) run as its README and docs/your-own-loop.md
say, in a fresh folder: the plain app under greenai's sweeper, the Lightning app as a plain
Hydra sweep, each of two trials. Its runs are read back from MLflow: under the sweep's parent
run, each with the app's config as params, energy_source, and one epoch_energy_j point per epoch.
The example makes its own data (seeded blobs): nothing is downloaded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient
from store_readers import energy_kept, mlflow_runs, optuna_trials, sweep_runs, trial_runs

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "your-own-loop"
EPOCHS = 2
# Small enough for CI's CPUs: the blobs' training split, and the idle power's measurement.
QUICK = ["greenai.energy.idle_seconds=0.5"]


def run_example(app: str, work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # The example's tiny MLP trains fastest on one thread: on a busy CI machine, a second
    # thread's waits for the first cost seconds per epoch.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("MLFLOW_EXPERIMENT_NAME", None)
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE / app), *args], cwd=work, env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def assert_read_back(work: Path, params: dict[str, str], epoch_metrics: tuple[str, ...]) -> list:
    """Two trial runs under one parent sweep run, each with the app's params, energy_source,
    one point per epoch of epoch_energy_j and the app's own metrics, net energy, and its energy
    labelled estimated where it was; the trial runs, oldest first."""
    runs = mlflow_runs(work)
    (parent,) = sweep_runs(runs)
    trials = trial_runs(runs)
    assert len(trials) == 2
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    for run in trials:
        assert run.info.status == "FINISHED" and run.data.tags["greenai.trial_state"] == "finished"
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        for key, value in params.items():
            assert run.data.params[key] == value, key
        source = run.data.tags["energy_source"]
        assert source in ("measured", "estimated")
        if source == "estimated":
            assert "ESTIMATED" in run.data.tags["mlflow.note.content"]
        assert energy_kept(run)
        for key in ("epoch_energy_j", "epoch_net_energy_j", "eval_energy_j_epoch", *epoch_metrics):
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            assert steps == list(range(1, EPOCHS + 1)), f"{run.info.run_name} {key}: steps {steps}"
        assert run.data.metrics["epochs_run"] == EPOCHS
    assert parent.data.tags["energy_source"] in ("measured", "estimated")
    assert parent.data.metrics["sweep_trials_finished"] == 2
    return trials


def test_the_plain_app_runs_a_greenai_sweep(tmp_path):
    run_example(
        "loop.py",
        tmp_path,
        "-m",
        "greenai/searcher=random",
        "lr=interval(0.01,0.3)",
        "hydra.sweeper.n_trials=2",
        f"epochs={EPOCHS}",
        "data.train_size=1024",
        *QUICK,
    )
    trials = assert_read_back(
        tmp_path, {"epochs": str(EPOCHS), "model.hidden": "32", "greenai.metric": "test_accuracy"}, ("test_accuracy",)
    )
    assert {t.state.name for t in optuna_trials(tmp_path)} == {"COMPLETE"}
    assert len({t.data.params["lr"] for t in trials}) == 2, "each trial its own sampled lr"
    assert [t.data.tags["optuna.trial_number"] for t in trials] == ["0", "1"]


def test_the_lightning_app_runs_a_plain_sweep(tmp_path):
    run_example(
        "lightning_app.py",
        tmp_path,
        "-m",
        "model.hidden=16,32",
        f"trainer.max_epochs={EPOCHS}",
        "data.train_size=512",
        *QUICK,
    )
    trials = assert_read_back(
        tmp_path,
        {
            "trainer.max_epochs": str(EPOCHS),
            "greenai.metric": "val/acc",
            "callbacks.greenai._target_": "greenai.api.lightning.TrialCallback",
        },
        ("val/acc", "train/loss"),
    )
    assert sorted(t.data.params["model.hidden"] for t in trials) == ["16", "32"]
    assert all(t.data.tags["versions.lightning"] for t in trials)
