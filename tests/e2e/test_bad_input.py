"""Every kind of bad input in the table of docs/configuration.md, "Bad input": one line naming the
key, the value and what is allowed; exit status 2; no MLflow run, no Optuna trial, no output
folder left behind."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest
from datasets_on_disk import write_fashion, write_idx
from machine import without_counters

pytestmark = pytest.mark.slow


def broken_root(tmp_path, how: str):
    root = write_fashion(tmp_path / f"data-{how}")
    raw = root / "FashionMNIST" / "raw"
    if how == "missing":
        (raw / "train-labels-idx1-ubyte").unlink()
    elif how == "truncated":
        path = raw / "train-images-idx3-ubyte"
        path.write_bytes(path.read_bytes()[:1000])
    elif how == "magic":
        path = raw / "t10k-images-idx3-ubyte"
        path.write_bytes(b"\x00\x00\x08\x01" + path.read_bytes()[4:])
    elif how == "md5":  # full-size (10,000) test labels that are not the official ones
        write_idx(raw / "t10k-labels-idx1-ubyte", np.zeros(10000, dtype=np.uint8))
        write_idx(raw / "t10k-images-idx3-ubyte", np.zeros((10000, 28, 28), dtype=np.uint8))
    elif how == "gzip":
        flat = tmp_path / "flat"
        shutil.copytree(raw, flat)
        (flat / "train-images-idx3-ubyte").unlink()
        (flat / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x03")[:12])
        return flat
    return root


# (command line, start of the one-line error)
TABLE = [
    (
        ["model=resnet"],
        "model=resnet: unknown model; choose one of custom, denselinear, densepoly, simplecnn, torchvision",
    ),
    (
        ["model=torchvision", "model.arch=resnet19"],
        "model.arch=resnet19: not a torchvision classification model; closest: resnet18",
    ),
    (["model=custom", "model._target_=mypkg.nets.Net"], "model._target_=mypkg.nets.Net: not on the allow-list"),
    (
        ["model=custom", "model._target_=mypkg.nets.Net", "trusted_targets=[mypkg.*]"],
        "model._target_=mypkg.nets.Net: cannot be imported (ModuleNotFoundError: No module named 'mypkg')",
    ),
    (
        ["model=custom", "model._target_=torchvision.models.resnet18", "dataset=cifar10"],
        "model._target_=torchvision.models.resnet18: gives (2, 1000) for a batch of 2 3x32x32 images; "
        "the dataset needs (2, 10) logits",
    ),
    (
        ["dataset=mnist"],
        "dataset=mnist: unknown dataset; choose one of cifar10, custom, fashion_mnist, image_folder, torchvision",
    ),
    (
        ["dataset=torchvision", "dataset.name=MNISTT"],
        "dataset.name=MNISTT: not a torchvision dataset; closest: MNIST",
    ),
    (
        ["dataset=torchvision", "dataset.name=KMNIST", "dataset.root=/nonexistent"],
        "dataset.root=/nonexistent: torchvision's KMNIST cannot read its files under /nonexistent",
    ),
    (["dataset=image_folder", "dataset.root=/nonexistent"], "dataset.root=/nonexistent: no such folder"),
    (
        ["dataset=custom", "dataset._target_=mypkg.data.Images"],
        "dataset._target_=mypkg.data.Images: not on the allow-list",
    ),
    (["-m", "searcher=annealing"], "searcher=annealing: unknown searcher; choose one of bayes, grid, random, tpe"),
    (
        ["-m", "searcher=random", "space=paper3", "pruner=patient"],
        "pruner=patient: unknown pruner; choose one of hyperband, median, none, successive_halving",
    ),
    (["energy=nvidia"], "energy=nvidia: unknown energy; choose one of auto, estimate, off, zeus"),
    (["conv_layers=5"], "conv_layers=5: simplecnn on 28x28 images takes 1 to 4"),
    (["conv_layers=0"], "conv_layers=0: simplecnn on 28x28 images takes 1 to 4"),
    (["-m", "conv_layers=1,2,5"], "conv_layers=5: simplecnn on 28x28 images takes 1 to 4"),
    (["linear_layers=0"], "linear_layers=0: simplecnn with 2 conv layers on 28x28 images takes 1 to"),
    (
        ["model=densepoly", "linear_layers=12"],
        "linear_layers=12: densepoly with 0 conv layers on 28x28 images takes 1 to 10",
    ),
    (["epochs=0"], "epochs=0: must be a whole number >= 1"),
    (["epochs=-3"], "epochs=-3: must be a whole number >= 1"),
    (["batch_size=0"], "batch_size=0: must be a whole number >= 1"),
    (["epochs=abc"], "epochs=abc: Value 'abc' of type 'str' could not be converted to Integer"),
    (["lr=0"], "lr=0.0: must be a finite number > 0"),
    (["lr=-0.01"], "lr=-0.01: must be a finite number > 0"),
    (["beta1=1.0"], "beta1=1.0: must be in [0, 1)"),
    (["beta2=-0.1"], "beta2=-0.1: must be in [0, 1)"),
    (["eps=0"], "eps=0.0: must be a finite number > 0"),
    (["weight_decay=-1"], "weight_decay=-1.0: must be a finite number >= 0"),
    (["epoch=3"], "epoch=3: no such key (did you mean epochs?)"),
    (["-m", "searcher=random", "lr=interval(0.1,0.01)"], "lr=interval(0.1,0.01): not a valid search range"),
    (["-m", "searcher=random", "conv_layers=range(3,3)"], "conv_layers=range(3,3): not a valid search range"),
    (["-m", "searcher=random", "lr=interval(0,0.1)"], "search space: lr=0.0: must be a finite number > 0"),
    (
        ["-m", "searcher=random", "conv_layers=range(1,6)"],
        "search space: conv_layers=5: simplecnn on 28x28 images takes 1 to 4",
    ),
    (["-m", "searcher=grid"], "hydra.sweeper.params: the search space is empty"),
    (
        ["-m", "searcher=random", "space=paper3", "objective=accuracy_energy", "pruner=median"],
        "pruner: Optuna cannot prune a multi-objective study",
    ),
    (["tracking.uri=http://127.0.0.1:9"], "tracking.uri=http://127.0.0.1:9: MLflow server not reachable"),
    (
        ["-m", "conv_layers=1,2", "tracking.uri=http://127.0.0.1:9"],
        "tracking.uri=http://127.0.0.1:9: MLflow server not reachable",
    ),
    (
        ["tracking.uri=sqlite:////proc/none/mlflow.db"],
        "tracking.uri=sqlite:////proc/none/mlflow.db: cannot write in /proc/none",
    ),
    (
        ["-m", "searcher=random", "space=paper3", "sweep.storage=sqlite:////proc/none/optuna.db"],
        "sweep.storage=sqlite:////proc/none/optuna.db: cannot write in /proc/none",
    ),
    (["energy=zeus"], "energy=zeus: Zeus found no GPU (NVML) and no readable CPU (RAPL) counters here"),
    (["dataset.root=/nonexistent"], "dataset.root=/nonexistent: no Fashion-MNIST IDX files there"),
]
ROOTS = [
    ("missing", "lacks train-labels-idx1-ubyte"),
    ("truncated", "truncated"),
    ("magic", "wrong magic number"),
    ("md5", "differs from the official"),
    ("gzip", "cannot be read"),
]


def assert_refused(greenai, args, message):
    proc = greenai(*args, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("greenai: error: ")]
    assert len(errors) == 1, proc.stderr[-2000:]
    assert errors[0].removeprefix("greenai: error: ").startswith(message), errors[0]
    assert "Traceback" not in proc.stderr
    left = sorted(p.name for p in greenai.cwd.iterdir())
    assert left == [], f"left behind: {left}"


def case(args: list[str], message: str):  # type: ignore[no-untyped-def]
    """One row of TABLE; energy=zeus is bad input only where Zeus has nothing to read."""
    zeus = any(a.startswith("energy=zeus") for a in args)
    return pytest.param(args, message, id=" ".join(args), marks=without_counters if zeus else ())


@pytest.mark.parametrize(("args", "message"), [case(a, m) for a, m in TABLE])
def test_bad_input_is_refused_before_anything_runs(greenai, tiny, args, message):
    overrides = [a for a in tiny if not any(a.split("=")[0] == b.split("=")[0] for b in args)]
    assert_refused(greenai, [*args, *overrides], message)


def test_an_empty_image_folder_is_refused(greenai, tmp_path):
    for split in ("train", "test"):
        (tmp_path / "empty" / split / "cats").mkdir(parents=True)
    root = tmp_path / "empty"
    assert_refused(
        greenai,
        ["dataset=image_folder", f"dataset.root={root}", f"dataset.cache_dir={tmp_path / 'cache'}"],
        f"dataset.root={root}: {root / 'train'} holds no images in class folders",
    )


def test_bf16_on_a_device_without_it_is_refused(greenai, tiny):
    """The command as it runs on a GPU without bfloat16 (before Ampere): the device's answer is
    the one thing replaced, in the process that runs the unchanged command."""
    import subprocess
    import sys

    without_bf16 = (
        "import sys; import greenai.training.precision as p; p.bf16_supported = lambda device: False; "
        "sys.argv[0] = 'greenai.train'; from greenai.train import main; main()"
    )
    proc = subprocess.run(
        [sys.executable, "-c", without_bf16, "precision=bf16", *tiny],
        cwd=greenai.cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("greenai: error: ")]
    assert errors == [
        f"greenai: error: precision=bf16: cpu ({torch_threads()} threads) has no bfloat16 "
        "(GPUs have it from Ampere on); use precision=fp16 or fp32"
    ], proc.stderr[-2000:]
    assert sorted(p.name for p in greenai.cwd.iterdir()) == []


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


@pytest.mark.parametrize(("how", "message"), ROOTS, ids=[h for h, _ in ROOTS])
def test_broken_dataset_roots_are_refused(greenai, tmp_path, how, message):
    root = broken_root(tmp_path, how)
    # A single run, and (once) a sweep, whose pre-flight check reads the files too.
    for args in (["epochs=1"], ["-m", "conv_layers=1,2", "epochs=1"])[: 2 if how == "truncated" else 1]:
        proc_args = [*args, f"dataset.root={root}", f"dataset.cache_dir={tmp_path / 'cache'}"]
        assert_refused(greenai, proc_args, f"dataset.root={root}: ")
        assert message in greenai(*proc_args, check=False).stderr
