"""Models beyond the paper's, as users run them: torchvision's builders and a user's own module."""

from __future__ import annotations

import pytest
from store_readers import mlflow_runs, trial_runs

pytestmark = pytest.mark.slow

USER_MODULE = """
from torch import nn


class Net(nn.Sequential):
    def __init__(self, num_classes, in_channels, width=4):
        super().__init__(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4), nn.Flatten(),
            nn.Linear(width * 7 * 7, num_classes),
        )
"""


def test_a_users_module_from_the_working_folder_is_swept_like_the_papers(greenai, tiny):
    (greenai.cwd / "mynets.py").write_text(USER_MODULE)
    args = ["model=custom", "model._target_=mynets.Net", "trusted_targets=[mynets.*]", "+model.args.width=2,6"]
    greenai("-m", *args, "fuse=true", "repeats=2", *tiny)
    trials = trial_runs(mlflow_runs(greenai.cwd))
    assert [r.info.status for r in trials] == ["FINISHED"] * 2
    # Built of layers fusion groups: each trial's repeats trained as one fused group.
    assert [r.data.metrics["fused_group_size"] for r in trials] == [2.0, 2.0]
    assert {r.info.run_name for r in trials} == {"net-width2-s1234", "net-width6-s1234"}
    for run in trials:
        params, width = run.data.params, int(run.data.params["model.args.width"])
        assert params["model._target_"] == "mynets.Net" and params["model.name"] == "custom"
        assert int(params["arch.params"]) == (9 * width + width) + (width * 49 * 10 + 10)
        assert int(params["arch.macs_per_sample"]) == width * 28 * 28 * 9 + width * 49 * 10
        counted = {k: int(params[f"arch.{k}_layers"]) for k in ("conv", "linear", "activation", "norm", "attention")}
        assert counted == {"conv": 1, "linear": 1, "activation": 1, "norm": 0, "attention": 0}


def test_a_torchvision_model_trains_on_grey_images(greenai, tiny):
    proc = greenai("model=torchvision", "model.arch=resnet18", "fuse=true", *tiny)
    assert proc.stdout.count("fuse: running unfused: the model (resnet18) cannot group a ResNet") == 1
    (run,) = trial_runs(mlflow_runs(greenai.cwd))
    params = run.data.params
    assert run.info.status == "FINISHED" and run.info.run_name == "resnet18-s1234"
    assert params["model.arch"] == "resnet18" and params["arch.conv_layers"] == "20"
    assert run.data.metrics["accuracy"] == run.data.metrics["test_accuracy"] and run.data.metrics["epochs_run"] == 1


def test_the_models_and_data_benchmark_runs_quick_on_a_cpu(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "benchmarks/models_data.py", "--quick", "--train-size", "40", "--workers", "1"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("one epoch of ResNet-18 on 40 synthetic CIFAR-sized images")
    cases = {line.split(":")[0].strip(): line for line in lines[1:4]}
    assert list(cases) == ["device, fp32", "streamed, fp32", "device, bf16"]
    assert " 1.00x time,  1.00x energy (against device, fp32)" in cases["device, fp32"]
    assert all("x time" in line and "x energy" in line for line in cases.values())
