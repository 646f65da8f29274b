"""Read back what a command left: MLflow runs by kind and state, Optuna trials by state."""

from __future__ import annotations

from pathlib import Path


def mlflow_runs(work: Path, experiment: str = "greenai") -> list:
    """Every run of `experiment` in the store at `work/mlflow.db`, oldest first."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment} in {work}"
    return client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"], max_results=5000)


def trial_runs(runs: list) -> list:
    return [r for r in runs if r.data.tags.get("greenai.run_kind") == "trial"]


def sweep_runs(runs: list) -> list:
    return [r for r in runs if r.data.tags.get("greenai.run_kind") == "sweep"]


def by_state(runs: list, state: str) -> list:
    return [r for r in runs if r.data.tags.get("greenai.trial_state") == state]


def optuna_trials(work: Path) -> list:
    """All trials of every study in `work/optuna.db`."""
    import optuna

    storage = f"sqlite:///{work / 'optuna.db'}"
    trials = []
    for summary in optuna.get_all_study_summaries(storage):
        trials += optuna.load_study(study_name=summary.study_name, storage=storage).get_trials(deepcopy=False)
    return trials


def energy_kept(run) -> bool:
    """The run logged the energy it spent: more than 0 J for the CPU estimate; at least 0 J for
    hardware counters, whose steps make the short windows of tiny test runs read 0 J (a GPU host
    labels them approximate)."""
    value = run.data.metrics.get("energy_j")
    if value is None:
        return False
    return value >= 0 if run.data.tags.get("energy_source") in ("measured", "attributed", "fused") else value > 0


EPOCH_METRICS = ("train_loss", "test_loss", "test_accuracy", "epoch_seconds")


def assert_every_epoch_once(client, run, epochs: int) -> None:
    """Each per-epoch metric of `run` has one point for each of its epochs, no more."""
    for key in EPOCH_METRICS:
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, key))
        assert steps == list(range(1, epochs + 1)), f"{run.info.run_name} {key}: steps {steps}"
