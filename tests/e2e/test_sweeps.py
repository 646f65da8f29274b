"""Optuna-driven sweeps end to end: searchers, grids, seeds, Pareto sets, resume, failures,
parallel launchers. Each runs the real command in a subprocess on tiny data, then reads the
MLflow and Optuna stores back."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from store_readers import by_state, mlflow_runs, optuna_trials, sweep_runs, trial_runs
from waiting import wait_for

from greenai.sweep.totals import pareto_front

pytestmark = pytest.mark.slow


def complete(trials):
    return [t for t in trials if t.state.name == "COMPLETE"]


@pytest.mark.parametrize("searcher", ["grid", "random", "bayes", "tpe"])
def test_each_searcher_runs_its_trials_and_records_them(greenai, tiny, searcher):
    greenai("-m", f"searcher={searcher}", "space=paper3", "hydra.sweeper.n_trials=3", *tiny)
    assert len(complete(optuna_trials(greenai.cwd))) == 3
    runs = mlflow_runs(greenai.cwd)
    trials = trial_runs(runs)
    assert sorted(int(r.data.tags["greenai.round"]) for r in trials) == [1, 2, 3]
    assert all(r.info.status == "FINISHED" for r in trials)
    (sweep,) = sweep_runs(runs)
    assert sweep.data.metrics["sweep_trials_finished"] == 3
    best = max(r.data.metrics["accuracy"] for r in trials)
    assert sweep.data.metrics["sweep_best_accuracy"] == best
    first = min(int(r.data.tags["greenai.round"]) for r in trials if r.data.metrics["accuracy"] == best)
    assert sweep.data.metrics["best_round"] == first


def test_grid_covers_its_grid_once(greenai, tiny):
    # 2 lr choices x 2 evenly spaced beta1 values (upper bound left out) = 4 points, asked for 10.
    greenai(
        "-m",
        "searcher=grid",
        "lr=choice(0.001,0.01)",
        "beta1=interval(0.5,0.9)",
        "hydra.sweeper.grid_points=2",
        "hydra.sweeper.n_trials=10",
        *tiny,
    )
    points = [(t.params["lr"], round(t.params["beta1"], 9)) for t in complete(optuna_trials(greenai.cwd))]
    assert sorted(points) == [(0.001, 0.5), (0.001, 0.7), (0.01, 0.5), (0.01, 0.7)]


def test_same_seed_same_trials_other_seed_other_trials(greenai, tiny, tmp_path):
    def sampled(seed):
        # A storage of its own per call: the same command on the same storage would resume.
        work = tmp_path / f"w{seed}-{time.monotonic_ns()}"
        work.mkdir()
        greenai(
            "-m",
            "searcher=random",
            "space=paper5",
            "hydra.sweeper.n_trials=3",
            f"seed={seed}",
            "tracking.experiment=seeded",
            f"sweep.storage=sqlite:///{work / 'optuna.db'}",
            *tiny,
        )
        return [t.params for t in sorted(complete(optuna_trials(work)), key=lambda t: t.number)]

    assert sampled(1234) == sampled(1234)
    assert sampled(1234) != sampled(7)


def test_two_objective_pareto_set_is_non_dominated_among_the_runs(greenai, tiny):
    greenai("-m", "searcher=random", "space=paper3", "objective=accuracy_energy", "hydra.sweeper.n_trials=6", *tiny)
    trials = [r for r in trial_runs(mlflow_runs(greenai.cwd)) if r.info.status == "FINISHED"]
    points = [(r.data.metrics["accuracy"], r.data.metrics["energy_j"]) for r in trials]
    expected = {trials[i].info.run_id for i in pareto_front(points)}
    # Independently: a run is on the front if no other run is at least as good in both, better in one.
    brute = {
        r.info.run_id
        for r, (a, e) in zip(trials, points, strict=True)
        if not any(a2 >= a and e2 <= e and (a2, e2) != (a, e) for a2, e2 in points)
    }
    assert expected == brute
    marked = {r.info.run_id for r in trials if r.data.tags.get("greenai.pareto") == "true"}
    assert marked == brute
    (sweep,) = sweep_runs(mlflow_runs(greenai.cwd))
    assert sorted(sweep.data.tags["greenai.pareto_rounds"].split(",")) == sorted(
        r.data.tags["greenai.round"] for r in trials if r.info.run_id in brute
    )


def test_a_killed_sweep_resumes_to_exactly_n_trials(greenai, fashion_root, tmp_path):
    args = [
        "-m",
        "searcher=random",
        "space=paper3",
        "hydra.sweeper.n_trials=5",
        "epochs=3",
        "batch_size=16",
        f"dataset.root={fashion_root}",
        f"dataset.cache_dir={tmp_path / 'cache'}",
    ]
    log = tmp_path / "first.log"
    proc = greenai.start(*args, log=log)
    wait_for(log, "2/5 trials finished", proc)
    proc.kill()  # SIGKILL: no clean-up runs in the killed process
    proc.wait()
    greenai(*args)
    trials = optuna_trials(greenai.cwd)
    assert len(complete(trials)) == 5
    assert not [t for t in trials if t.state.name == "RUNNING"]
    runs = trial_runs(mlflow_runs(greenai.cwd))
    finished = by_state(runs, "finished")
    assert len(finished) == 5
    assert max(Counter(r.data.tags["optuna.trial_number"] for r in finished).values()) == 1, "no duplicates"
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert len(sweep_runs(mlflow_runs(greenai.cwd))) == 1, "the resumed sweep reuses its parent run"


def test_a_failing_trial_is_recorded_failed_and_the_sweep_goes_on(greenai, tiny):
    # lr=1e30 makes the loss NaN: that trial fails; the other grid points still run.
    proc = greenai(
        "-m",
        "searcher=grid",
        "lr=choice(0.001,1e30,0.002)",
        "hydra.sweeper.n_trials=3",
        "epochs=3",
        *tiny[:2],
        "batch_size=32",
    )
    assert "every grid point has been tried" in proc.stdout + proc.stderr
    trials = optuna_trials(greenai.cwd)
    assert Counter(t.state.name for t in trials) == {"COMPLETE": 2, "FAIL": 1}
    (failed,) = [t for t in trials if t.state.name == "FAIL"]
    assert failed.params["lr"] == 1e30 and "diverged" in failed.user_attrs["failure_reason"]
    runs = trial_runs(mlflow_runs(greenai.cwd))
    assert Counter(r.info.status for r in runs) == {"FINISHED": 2, "FAILED": 1}
    (sweep,) = sweep_runs(mlflow_runs(greenai.cwd))
    assert sweep.data.metrics["sweep_trials_failed"] == 1 and sweep.info.status == "FINISHED"


@pytest.mark.parametrize(
    "launcher",
    [
        ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2"],
        ["hydra/launcher=submitit_local"],
        ["hydra/launcher=packed", "sweep.trials_per_gpu=2"],
    ],
)
def test_parallel_launchers_record_every_trial(greenai, tiny, launcher):
    greenai("-m", "searcher=random", "space=paper3", "hydra.sweeper.n_trials=4", *launcher, *tiny, timeout=900)
    assert len(complete(optuna_trials(greenai.cwd))) == 4
    runs = trial_runs(mlflow_runs(greenai.cwd))
    assert len(by_state(runs, "finished")) == 4
    assert sorted(int(r.data.tags["optuna.trial_number"]) for r in runs) == [0, 1, 2, 3]
