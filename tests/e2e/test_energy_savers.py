"""Pruning, energy budgets and accuracy targets in real sweeps (subprocesses, tiny data)."""

from __future__ import annotations

from collections import Counter

import pytest
from store_readers import by_state, energy_kept, mlflow_runs, optuna_trials, sweep_runs, trial_runs

pytestmark = pytest.mark.slow

PRUNING = [
    "searcher=random",
    "sweep.study_name=pruning",
    "pruner=median",
    "sweep.pruner.n_startup_trials=1",
    "sweep.pruner.n_warmup_steps=0",
    "epochs=4",
    "batch_size=32",
]


def test_a_pruned_trial_stops_early_is_recorded_pruned_and_its_energy_counts(greenai, tiny):
    data = tiny[:2]
    # A good trial first, to set the median; then, extending the same study, a hopeless one.
    greenai("-m", "lr=interval(0.003,0.0030001)", "hydra.sweeper.n_trials=1", *PRUNING, *data)
    proc = greenai("-m", "lr=interval(1e-7,1.0001e-7)", "hydra.sweeper.n_trials=2", *PRUNING, *data)
    assert "Error executing job" not in proc.stderr, "a pruned trial is not an error"
    trials = sorted(optuna_trials(greenai.cwd), key=lambda t: t.number)
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED"]
    runs = mlflow_runs(greenai.cwd)
    (pruned,) = by_state(trial_runs(runs), "pruned")
    assert pruned.info.status == "FINISHED" and pruned.data.metrics["epochs_run"] < 4
    assert energy_kept(pruned) and trials[1].user_attrs["figures"]["energy_j"] == pytest.approx(
        pruned.data.metrics["energy_j"]
    )
    (sweep,) = sweep_runs(runs)
    assert sweep.data.metrics["sweep_trials_pruned"] == 1
    assert sweep.data.metrics["sweep_energy_j"] == pytest.approx(
        sum(r.data.metrics["energy_j"] for r in trial_runs(runs))
    )


def test_an_energy_budget_stops_the_sweep_within_one_trial(greenai, tiny):
    greenai("-m", "searcher=random", "space=paper3", "hydra.sweeper.n_trials=20", "sweep.energy_budget_kj=0.002", *tiny)
    trials = sorted(optuna_trials(greenai.cwd), key=lambda t: t.number)
    spent = [t.user_attrs["figures"]["energy_j"] for t in trials]
    assert 0 < len(trials) < 20
    assert sum(spent) >= 2.0 and sum(spent[:-1]) < 2.0, "no trial starts once the budget is spent"
    (sweep,) = sweep_runs(mlflow_runs(greenai.cwd))
    assert sweep.data.tags["greenai.stop_reason"].startswith("energy budget of 0.002 kJ reached")


def test_an_accuracy_target_stops_the_sweep(greenai, tiny):
    greenai("-m", "searcher=random", "space=paper3", "hydra.sweeper.n_trials=20", "sweep.target_accuracy=0.05", *tiny)
    assert len(optuna_trials(greenai.cwd)) == 1, "the first finished trial beats 0.05"
    (sweep,) = sweep_runs(mlflow_runs(greenai.cwd))
    assert sweep.data.tags["greenai.stop_reason"].startswith("target accuracy 0.05 reached")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["searcher=random", "space=paper3", "objective=accuracy_energy", "pruner=median"],
            "Optuna cannot prune a multi-objective study",
        ),
        (["conv_layers=1,2", "pruner=hyperband"], "pruning needs an Optuna searcher"),
    ],
)
def test_pruners_that_cannot_work_are_refused_plainly(greenai, tiny, args, message):
    proc = greenai("-m", *args, *tiny, check=False)
    assert proc.returncode == 2 and message in proc.stderr
    assert not (greenai.cwd / "mlflow.db").exists()


@pytest.mark.parametrize("pruner", ["successive_halving", "hyperband"])
def test_every_pruner_config_runs(greenai, tiny, pruner):
    greenai(
        "-m",
        "searcher=tpe",
        "space=paper3",
        "hydra.sweeper.n_trials=4",
        f"pruner={pruner}",
        "epochs=3",
        *tiny[:2],
        "batch_size=64",
    )
    states = Counter(t.state.name for t in optuna_trials(greenai.cwd))
    assert states["COMPLETE"] + states["PRUNED"] == 4 and not states["FAIL"]
    assert len(by_state(trial_runs(mlflow_runs(greenai.cwd)), "pruned")) == states["PRUNED"]
