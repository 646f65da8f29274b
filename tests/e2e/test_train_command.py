"""`python -m greenai.train` as users type it, in a subprocess; the stores read back after."""

from __future__ import annotations

from pathlib import Path

import pytest
from store_readers import energy_kept, mlflow_runs, sweep_runs, trial_runs

pytestmark = pytest.mark.slow


def history(work: Path, run_id: str, key: str) -> list[tuple[int, float]]:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def test_title_command_runs_three_trials_one_per_conv_depth(greenai, tiny):
    greenai("-m", "model=simplecnn", "conv_layers=1,2,3", *tiny)
    runs = mlflow_runs(greenai.cwd)
    trials = trial_runs(runs)
    assert [r.info.status for r in trials] == ["FINISHED"] * 3
    assert sorted(int(r.data.params["conv_layers"]) for r in trials) == [1, 2, 3]
    assert len({r.data.params["arch.params"] for r in trials}) == 3, "parameter counts differ by depth"
    assert {r.info.run_name for r in trials} == {f"simplecnn-conv{c}-lin3-relu-s1234" for c in (1, 2, 3)}
    for run in trials:
        assert run.data.tags["energy_source"] in ("measured", "estimated")
        assert run.data.metrics["arch_params"] == float(run.data.params["arch.params"])
        steps = history(greenai.cwd, run.info.run_id, "epoch_energy_j")
        assert [s for s, _ in steps] == [1] and steps[0][1] == pytest.approx(run.data.metrics["train_energy_j"])
        assert energy_kept(run) and run.data.metrics["accuracy"] == run.data.metrics["test_accuracy"]
        assert int(run.data.params["arch.n_conv2d"]) == int(run.data.params["conv_layers"])
        assert run.data.params["adam.beta2"] == "0.999"
    (sweep,) = sweep_runs(runs)
    assert sweep.info.status == "FINISHED" and sweep.data.metrics["sweep_trials_finished"] == 3
    assert all(r.data.tags["mlflow.parentRunId"] == sweep.info.run_id for r in trials)
    assert sweep.data.metrics["sweep_energy_j"] == pytest.approx(sum(r.data.metrics["energy_j"] for r in trials))


def test_a_single_run_logs_config_and_tags(greenai, tiny):
    greenai("lr=0.002", "beta2=0.95", *tiny)
    (run,) = mlflow_runs(greenai.cwd)
    assert (
        run.info.status == "FINISHED" and run.data.params["adam.beta2"] == "0.95" and run.data.params["lr"] == "0.002"
    )
    assert run.data.tags["versions.torch"] and run.data.tags["hydra.output_dir"]
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{greenai.cwd / 'mlflow.db'}")
    assert "config.yaml" in [a.path for a in client.list_artifacts(run.info.run_id)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["conv_layers=5"], "greenai: error: conv_layers=5: simplecnn on 28x28 images takes 1 to 4"),
        (["-m", "conv_layers=1,5"], "greenai: error: conv_layers=5: simplecnn on 28x28 images takes 1 to 4"),
        (
            ["dataset.root=/nonexistent/data"],
            "greenai: error: dataset.root=/nonexistent/data: no Fashion-MNIST IDX files there",
        ),
        (["beta1=1.0"], "greenai: error: beta1=1.0: must be in [0, 1)"),
    ],
)
def test_bad_input_is_one_line_nonzero_exit_and_no_results(greenai, tiny, args, message):
    proc = greenai(
        *[a for a in tiny if not (a.startswith("dataset.root") and any(x.startswith("dataset.root") for x in args))],
        *args,
        check=False,
    )
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("greenai: error:")]
    assert len(errors) == 1 and errors[0].startswith(message), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (greenai.cwd / "mlflow.db").exists(), "bad input must leave no MLflow store behind"


def test_a_diverging_run_is_failed_in_mlflow_with_its_reason(greenai, tiny):
    proc = greenai("lr=1e30", "epochs=4", "batch_size=32", *tiny[:2], check=False)
    assert proc.returncode == 2 and "the run diverged" in proc.stderr
    (run,) = mlflow_runs(greenai.cwd)
    assert run.info.status == "FAILED" and "diverged" in run.data.tags["greenai.failure_reason"]
    assert run.data.metrics["epochs_run"] >= 1 and energy_kept(run), "the energy spent is kept"


def test_genuine_fashion_mnist_learns_well_above_chance(greenai, tmp_path):
    assert Path("/usr/share/datasets/fashion-mnist").is_dir(), (
        "needs Debian's dataset-fashion-mnist (installed by .ci/run)"
    )
    greenai(
        "epochs=2",
        "batch_size=64",
        "dataset.train_size=4000",
        "dataset.test_size=2000",
        f"dataset.cache_dir={tmp_path / 'cache'}",
    )
    (run,) = mlflow_runs(greenai.cwd)
    assert run.data.tags["dataset_files"] == "/usr/share/datasets/fashion-mnist"
    assert run.data.metrics["accuracy"] >= 0.75
