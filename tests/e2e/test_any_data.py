"""Image-classification data beyond the paper's two datasets: torchvision's classes, ImageFolder,
a user's own dataset; statistics computed once; data on the device or streamed; augmentation."""

from __future__ import annotations

import json
import sys
from dataclasses import replace

import pytest
import torch
from datasets_on_disk import write_fashion, write_image_folder

from greenai.config import Augment, DatasetConfig, DatasetKind, Placement
from greenai.errors import ConfigError, DatasetError
from greenai.training import inputs, sources
from greenai.training.augment import CropFlip
from greenai.training.loop import Hyperparameters, fit, make_optimizer
from greenai.training.streaming import StreamedData

CPU = torch.device("cpu")

USER_DATASET = '''
import torch


class Bands(torch.utils.data.Dataset):
    """A user's dataset: float images in [0, 1], one bright row per class."""

    def __init__(self, train, size=40):
        self.size = size if train else size // 2

    def __len__(self):
        return self.size

    def __getitem__(self, i):
        image = torch.zeros(1, 12, 12)
        image[0, i % 4] = 1.0
        return image, i % 4
'''


@pytest.fixture(autouse=True)
def fresh_memory():
    inputs._LOADED.clear()
    inputs._OPENED.clear()
    yield
    inputs._LOADED.clear()
    inputs._OPENED.clear()


def mnist(tmp_path, **kw) -> DatasetConfig:
    root = write_fashion(tmp_path / "mnist", folder="MNIST")
    return DatasetConfig(
        name="MNIST", kind=DatasetKind.torchvision, root=str(root), cache_dir=str(tmp_path / "c"), **kw
    )


def folder(tmp_path, **kw) -> DatasetConfig:
    root = write_image_folder(tmp_path / "images")
    settings = {"channels": 3, "height": 16, "width": 16, **kw}
    return DatasetConfig(
        name="image_folder", kind=DatasetKind.image_folder, root=str(root), cache_dir=str(tmp_path / "c"), **settings
    )


def test_a_torchvision_dataset_is_read_from_its_root_with_computed_statistics(tmp_path):
    cfg = mnist(tmp_path)
    assert inputs.describe(cfg) == inputs.Facts((1, 28, 28), 10)
    loaded = inputs.load(cfg, CPU)
    assert loaded.placement == "device" and loaded.x_train.shape == (400, 1, 28, 28)
    raw = sources.open_split(cfg, True).items
    pixels = torch.stack([raw[i][0] for i in range(400)]).double() / 255
    mean, std = loaded.normalisation
    assert mean == pytest.approx([pixels.mean().item()], abs=1e-6) and std == pytest.approx(
        [pixels.std(correction=0).item()], abs=1e-6
    )
    assert loaded.x_train.mean().item() == pytest.approx(0.0, abs=1e-4), "normalised with them"


def test_statistics_are_computed_once_and_kept_in_the_cache(tmp_path):
    cfg = mnist(tmp_path)
    first = sources.mean_and_std(cfg, [torch.full((2, 1, 4, 4), 51, dtype=torch.uint8)])
    assert json.loads(sources.stats_path(cfg).read_text())["mean"] == [0.2]

    def never():
        raise AssertionError("recomputed")
        yield

    assert sources.mean_and_std(cfg, never()) == first
    assert sources.stats_path(replace(cfg, height=14, width=14)) != sources.stats_path(cfg), "a resize is another"


def test_missing_torchvision_files_say_where_to_put_them(tmp_path):
    cfg = DatasetConfig(name="KMNIST", kind=DatasetKind.torchvision, root=str(tmp_path), cache_dir=str(tmp_path / "c"))
    with pytest.raises(DatasetError) as info:
        inputs.describe(cfg)
    message = str(info.value)
    assert message.startswith(f"dataset.root={tmp_path}: torchvision's KMNIST cannot read its files")
    assert f"reads them from {tmp_path}/KMNIST/raw: put them there" in message and "\n" not in message


def test_an_unknown_torchvision_dataset_names_the_closest(tmp_path):
    cfg = DatasetConfig(name="CIFAR1000", kind=DatasetKind.torchvision, cache_dir=str(tmp_path))
    with pytest.raises(ConfigError, match=r"^dataset.name=CIFAR1000: not a torchvision dataset; closest: CIFAR100"):
        inputs.describe(cfg)


def test_an_image_folder_is_resized_to_the_set_shape(tmp_path):
    cfg = folder(tmp_path, channels=1)
    assert inputs.describe(cfg) == inputs.Facts((1, 16, 16), 3)
    loaded = inputs.load(cfg, CPU)
    assert loaded.x_train.shape == (60, 1, 16, 16) and loaded.x_test.shape == (30, 1, 16, 16)
    assert sorted(loaded.y_train.tolist()) == sorted([i % 3 for i in range(60)])


@pytest.mark.parametrize(
    ("layout", "message"),
    [("none", "no such folder"), ("no-test", "needs a test/ or val/ folder"), ("empty", "holds no images in class")],
)
def test_an_image_folder_missing_or_empty_is_one_line(tmp_path, layout, message):
    root = tmp_path / "images"
    if layout == "no-test":
        write_image_folder(root, train=6, test=3)
        for path in sorted((root / "test").rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        (root / "test").rmdir()
    elif layout == "empty":
        (root / "train" / "cats").mkdir(parents=True)
        (root / "test" / "cats").mkdir(parents=True)
    cfg = DatasetConfig(name="x", kind=DatasetKind.image_folder, root=str(root), channels=3, height=8, width=8)
    with pytest.raises(DatasetError, match=f"^dataset.root={root}: .*{message}"):
        inputs.describe(cfg)


@pytest.fixture
def user_dataset(tmp_path, monkeypatch):
    (tmp_path / "mydata.py").write_text(USER_DATASET)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield DatasetConfig(name="bands", kind=DatasetKind.custom, _target_="mydata.Bands", cache_dir=str(tmp_path / "c"))
    sys.modules.pop("mydata", None)


def test_a_users_dataset_is_allowed_by_the_config(user_dataset):
    with pytest.raises(ConfigError, match=r"^dataset._target_=mydata.Bands: not on the allow-list .*\[mydata.\*\]"):
        inputs.describe(user_dataset)
    trusted = ("mydata.*",)
    assert inputs.describe(user_dataset, trusted) == inputs.Facts((1, 12, 12), 4)
    loaded = inputs.load(replace(user_dataset, args={"size": 20}), CPU, trusted)
    assert loaded.train_count == 20 and loaded.test_count == 10
    assert torch.equal(loaded.y_train, torch.arange(20) % 4)


def test_placement_auto_keeps_data_on_the_device_only_when_it_fits(tmp_path):
    cfg = DatasetConfig(name="x", memory_fraction=0.5)
    assert inputs.choose_placement(cfg, 400, 1000)[0] is Placement.device
    placement, why = inputs.choose_placement(cfg, 600, 1000)
    assert placement is Placement.stream and why.startswith("too large for the device")
    assert inputs.choose_placement(replace(cfg, placement=Placement.stream), 1, 1000)[0] is Placement.stream


@pytest.mark.parametrize("workers", [0, 2])
def test_streamed_data_gives_the_batches_and_the_training_of_device_data(tmp_path, workers):
    cfg = mnist(tmp_path, train_size=100, test_size=50)
    on_device = inputs.load(cfg, CPU)
    inputs._LOADED.clear()
    streamed = inputs.load(replace(cfg, placement=Placement.stream, workers=workers), CPU)
    assert isinstance(streamed, StreamedData) and streamed.train_count == 100
    for (xa, ya), (xb, yb) in zip(
        on_device.train_batches(32, torch.Generator().manual_seed(3)),
        streamed.train_batches(32, torch.Generator().manual_seed(3)),
        strict=True,
    ):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    losses = []
    for data in (on_device, streamed):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
        opt = make_optimizer(net, Hyperparameters(1e-2, 0.9, 0.999, 1e-8, 0.0))
        run = fit(net, opt, data, epochs=2, batch_size=32, seed=5, meter=_off())
        losses.append([(e.train_loss, e.test_loss, e.test_accuracy) for e in run.epochs])
    assert losses[0] == losses[1]


def _off():
    from greenai.energy.meters import OffMeter

    return OffMeter()


def test_crop_flip_shifts_or_mirrors_each_image_drawn_from_the_seed():
    images = torch.randn(6, 2, 8, 8)
    out = CropFlip(seed=1, device=CPU)(images)
    assert out.shape == images.shape
    assert torch.equal(out, CropFlip(seed=1, device=CPU)(images)) and not torch.equal(out, CropFlip(2, CPU)(images))
    padded = torch.nn.functional.pad(images, (1, 1, 1, 1))  # an eighth of 8 pixels
    for image, window in zip(out, padded, strict=True):
        candidates = [window[:, dy : dy + 8, dx : dx + 8] for dy in range(3) for dx in range(3)]
        assert any(torch.equal(image, c) or torch.equal(image, c.flip(2)) for c in candidates)


def test_augmentation_changes_training_but_not_the_batch_order(tmp_path):
    cfg = mnist(tmp_path, train_size=50, test_size=20)
    data = inputs.load(cfg, CPU)
    results = {}
    for augment in (Augment.none, Augment.crop_flip):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
        opt = make_optimizer(net, Hyperparameters(1e-2, 0.9, 0.999, 1e-8, 0.0))
        crop = CropFlip(7, CPU) if augment is Augment.crop_flip else None
        results[augment] = fit(net, opt, data, epochs=1, batch_size=10, seed=5, meter=_off(), augment=crop)
    assert results[Augment.none].epochs[0].train_loss != results[Augment.crop_flip].epochs[0].train_loss


@pytest.mark.slow
def test_a_folder_of_images_streamed_and_augmented_as_users_run_it(greenai, tmp_path):
    from store_readers import mlflow_runs, trial_runs

    root = write_image_folder(tmp_path / "images")
    args = ["dataset=image_folder", f"dataset.root={root}", f"dataset.cache_dir={tmp_path / 'c'}", "epochs=1"]
    proc = greenai(*args, "batch_size=16", "dataset.placement=stream", "dataset.augment=crop_flip", "dataset.workers=1")
    (run,) = trial_runs(mlflow_runs(greenai.cwd))
    params = run.data.params
    assert run.info.status == "FINISHED" and run.data.tags["data_placement"] == "streamed"
    assert (params["dataset.classes"], params["dataset.channels"], params["dataset.height"]) == ("3", "3", "32")
    kept = json.loads(next((tmp_path / "c" / "stats").glob("*.json")).read_text())
    assert params["dataset.mean"] == str(kept["mean"]) and kept["images"] == 60
    assert "streamed to cpu (1 workers): dataset.placement=stream" in proc.stdout
    assert "epoch   1/1 loss" in proc.stdout and ", data streamed" in proc.stdout
