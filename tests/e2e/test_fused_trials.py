"""Fused trials through the commands users type: a trial's repeats, a batch of trials grouped by
architecture (hydra/launcher=fused), pruning inside a group; every member keeps its own MLflow
run and Optuna trial. (tests/e2e/test_fusion.py holds the fused model's exactness.)"""

from __future__ import annotations

import statistics
from collections import Counter

import pytest
from store_readers import by_state, energy_kept, mlflow_runs, optuna_trials, sweep_runs, trial_runs

pytestmark = pytest.mark.slow


def history(work, run_id: str, key: str) -> list[tuple[int, float]]:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_a_trials_repeats_train_as_one_group_and_log_as_one_after_another(greenai, tiny):
    greenai("fuse=true", "repeats=3", *tiny)
    (run,) = trial_runs(mlflow_runs(greenai.cwd))
    metrics = run.data.metrics
    assert run.info.status == "FINISHED" and metrics["fused_group_size"] == 3 and metrics["repeats_run"] == 3
    accuracy = history(greenai.cwd, run.info.run_id, "test_accuracy")
    assert [step for step, _ in accuracy] == [1, 2, 3], "repeat r's epoch e at step r x epochs + e"
    assert metrics["accuracy"] == pytest.approx(statistics.fmean(v for _, v in accuracy))
    assert run.data.tags["energy_source"] in ("fused", "fused_estimated") and energy_kept(run)


def test_a_batch_fusion_cannot_take_says_why_in_its_plan_line(greenai, tiny):
    """fuse=true with an optimiser fusion does not train: the launcher's plan line gives the
    reason the trial set-up decided, not a guess from fuse= and the device."""
    proc = greenai("-m", "hydra/launcher=fused", "fuse=true", "optimizer=sgd", "seed=1,2", *tiny)
    said = [line for line in (proc.stdout + proc.stderr).splitlines() if "Launching 2 jobs" in line]
    reason = "optimizer=sgd (fusion trains Adam only)"
    assert len(said) == 1 and said[0].endswith(f"Launching 2 jobs: 2 one after another, not fused ({reason})"), said
    trials = trial_runs(mlflow_runs(greenai.cwd))
    assert len(trials) == 2 and all(r.info.status == "FINISHED" for r in trials)
    assert all("fused_group_size" not in r.data.metrics for r in trials)


def test_a_batch_fuses_by_architecture_each_trial_its_own_run(greenai, tiny):
    proc = greenai("-m", "hydra/launcher=fused", "fuse=true", "conv_layers=1,2", "seed=1,2,3", "repeats=2", *tiny)
    said = [line for line in (proc.stdout + proc.stderr).splitlines() if "Launching 6 jobs" in line]
    assert len(said) == 1 and said[0].endswith("Launching 6 jobs: fused as 2 groups (3 + 3 trials)"), said
    runs = mlflow_runs(greenai.cwd)
    trials = trial_runs(runs)
    assert len(trials) == 6 and all(r.info.status == "FINISHED" for r in trials)
    # Two groups, one per conv depth, each of 3 trials x 2 repeats.
    assert {r.data.metrics["fused_group_size"] for r in trials} == {6.0}
    assert Counter(r.data.params["conv_layers"] for r in trials) == {"1": 3, "2": 3}
    assert len({r.data.params["adam.lr"] for r in trials}) == 1 and len({r.data.params["seed"] for r in trials}) == 3
    for run in trials:
        assert [s for s, _ in history(greenai.cwd, run.info.run_id, "epoch_energy_j")] == [1, 2]
        assert energy_kept(run)
    (sweep,) = sweep_runs(runs)
    assert sweep.data.metrics["sweep_trials_finished"] == 6
    assert sweep.data.metrics["sweep_energy_j"] == pytest.approx(sum(r.data.metrics["energy_j"] for r in trials))


def test_an_optuna_batch_fused_with_members_pruned_out_of_their_group(greenai, tiny):
    greenai(
        "-m",
        "searcher=random",
        "space=paper3",
        "hydra/launcher=fused",
        "fuse=true",
        "hydra.sweeper.n_jobs=4",
        "hydra.sweeper.n_trials=8",
        "pruner=median",
        "sweep.pruner.n_startup_trials=2",
        "sweep.pruner.n_warmup_steps=0",
        *[a for a in tiny if not a.startswith("epochs=")],
        "epochs=4",
    )
    trials = optuna_trials(greenai.cwd)
    states = Counter(t.state.name for t in trials)
    assert states["COMPLETE"] + states["PRUNED"] == 8 and len(trials) == 8, states
    runs = trial_runs(mlflow_runs(greenai.cwd))
    assert len(runs) == 8 and not [r for r in runs if r.info.status == "RUNNING"]
    by_number = {int(r.data.tags["optuna.trial_number"]): r for r in runs}
    for trial in trials:
        run = by_number[trial.number]
        assert trial.user_attrs["mlflow_run_id"] == run.info.run_id, "each member: its own run, its own trial"
        # Each member trained with its own trial's point (the launcher reuses one composed config).
        for key in ("lr", "beta1", "beta2"):
            assert float(run.data.params[f"adam.{key}"]) == pytest.approx(trial.params[key], rel=1e-6), key
        if trial.state.name == "PRUNED":
            assert run.data.tags["greenai.trial_state"] == "pruned" and energy_kept(run)
            assert run.data.metrics["epochs_run"] < 4, "a pruned member left its group early"
        else:
            assert trial.value == pytest.approx(run.data.metrics["accuracy"])
    assert states["PRUNED"] >= 1, "the median pruner stopped some of the seeded points"
    assert len(by_state(runs, "pruned")) == states["PRUNED"]
