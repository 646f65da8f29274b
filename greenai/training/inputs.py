"""The data a trial trains on, whatever its source, and where it lives while the trial trains.

Sources: the paper's two datasets (greenai's checked readers, training.data) and any other
image-classification data (training.sources: torchvision's classes, ImageFolder, a user's own).

Placement (`dataset.placement`): both splits as normalised float32 tensors on the training
device (training.data.DeviceData: batches drawn by index, no per-sample work; benchmarks/
data_pipeline.py shows what that saves), or streamed batch by batch (training.streaming). `auto`
keeps them on the device when they take at most `dataset.memory_fraction` of its free memory
(the host's for the CPU), and streams them otherwise; the choice is logged.

Facts the checks need before a run exists (image shape, classes) come from the config where it
gives them (the paper's datasets: no file is read), else from the data's first image.
"""

from __future__ import annotations

import logging
from dataclasses import astuple, dataclass, replace
from typing import Union

import torch

from greenai.config import DatasetConfig, DatasetKind, DatasetName, Placement
from greenai.errors import DatasetError
from greenai.training import data, devices, sources
from greenai.training.streaming import StreamedData

log = logging.getLogger(__name__)
TrainingData = Union[data.DeviceData, StreamedData]  # noqa: UP007 (a runtime alias, read by isinstance)
PAPER_COUNTS = {DatasetName.fashion_mnist: (60000, 10000), DatasetName.cifar10: (50000, 10000)}


@dataclass(frozen=True)
class Facts:
    """What the checks need to know of a dataset: one image's shape and the number of classes."""

    input_shape: tuple[int, int, int]
    classes: int


def _known(cfg: DatasetConfig) -> Facts | None:
    if None in (cfg.channels, cfg.height, cfg.width, cfg.classes):
        return None
    return Facts((int(cfg.channels), int(cfg.height), int(cfg.width)), int(cfg.classes))  # type: ignore[arg-type]


# ---------------------------------------------------------------- opening the splits

_OPENED: dict[tuple[object, ...], tuple[sources.Split, sources.Split, str]] = {}


def _identity(cfg: DatasetConfig) -> tuple[object, ...]:
    """Every setting that changes which images are read and how they are converted."""
    return tuple(
        repr(v)
        for v in (cfg.kind, cfg.name, cfg._target_, cfg.args, cfg.root, cfg.cache_dir, cfg.download)
        + (cfg.channels, cfg.height, cfg.width)
    )


def _paper_splits(cfg: DatasetConfig) -> tuple[sources.Split, sources.Split, str]:
    try:
        x_train, y_train, x_test, y_test, where = data._read_splits(cfg)
    except DatasetError as error:
        raise data._naming_the_key(cfg, error) from None
    data.check_shape(cfg, x_train)
    train = sources.Split(sources.TensorItems(x_train, y_train), y_train, x_train)
    test = sources.Split(sources.TensorItems(x_test, y_test), y_test, x_test)
    return train, test, where


def open_splits(cfg: DatasetConfig, trusted: tuple[str, ...] = ()) -> tuple[sources.Split, sources.Split, str]:
    """Both splits (items and labels), and where they were read from; kept for the process's
    later trials and checks (one dataset at a time)."""
    key = (*_identity(cfg), trusted)
    if key not in _OPENED:
        if cfg.kind is DatasetKind.paper:
            opened = _paper_splits(cfg)
        else:
            train = sources.open_split(cfg, True, trusted)
            test = sources.open_split(cfg, False, trusted)
            opened = (train, test, _where(cfg))
        _OPENED.clear()
        _OPENED[key] = opened
    return _OPENED[key]


def _where(cfg: DatasetConfig) -> str:
    if cfg.kind is DatasetKind.custom:
        return str(cfg._target_)
    if cfg.kind is DatasetKind.torchvision:
        return f"torchvision.datasets.{cfg.name} in {cfg.root or cfg.cache_dir}"
    return str(cfg.root)


def _classes(cfg: DatasetConfig, train: sources.Split, test: sources.Split) -> int:
    """`dataset.classes`, else the class list torchvision's datasets keep, else the largest label + 1."""
    found = getattr(getattr(train.items, "dataset", None), "classes", None)
    count = cfg.classes or (len(found) if isinstance(found, (list, tuple)) else None)
    largest = int(max(train.labels.max(), test.labels.max()))
    if count is None:
        return largest + 1
    if largest >= count or int(min(train.labels.min(), test.labels.min())) < 0:
        raise DatasetError(f"{sources.describe_key(cfg)}: labels run from 0 to {largest}, beyond its {count} classes")
    return count


def describe(cfg: DatasetConfig, trusted: tuple[str, ...] = ()) -> Facts:
    """The image shape and classes: from the config where it gives them, else from the data."""
    known = _known(cfg)
    if known is not None:
        return known
    train, test, _ = open_splits(cfg, trusted)
    c, h, w = (int(d) for d in train.items[0][0].shape)
    return Facts((c, h, w), _classes(cfg, train, test))


def check_files(cfg: DatasetConfig, trusted: tuple[str, ...] = ()) -> str:
    """Find and verify the dataset's files; say where they are."""
    if cfg.kind is DatasetKind.paper:
        return data.check_files(cfg)
    return open_splits(cfg, trusted)[2]


# ---------------------------------------------------------------- where the images live


def _counts(cfg: DatasetConfig, trusted: tuple[str, ...]) -> tuple[int, int]:
    """Images of each split that will be trained and evaluated on; for the paper's datasets, at
    most: their full size, known without reading them (a smaller copy takes less)."""
    if cfg.kind is DatasetKind.paper:
        train, test = PAPER_COUNTS[DatasetName(cfg.name)]
    else:
        opened = open_splits(cfg, trusted)
        train, test = len(opened[0]), len(opened[1])
    return min(train, cfg.train_size or train), min(test, cfg.test_size or test)


def choose_placement(cfg: DatasetConfig, needed: int, free: int) -> tuple[Placement, str]:
    """Device or streamed, and why, for both splits taking `needed` bytes as float32."""
    share = f"<= {needed / 2**20:,.0f} MiB as float32, {free / 2**20:,.0f} MiB free, share {cfg.memory_fraction:g}"
    if cfg.placement is not Placement.auto:
        return cfg.placement, f"dataset.placement={cfg.placement.value} ({share})"
    if needed <= cfg.memory_fraction * free:
        return Placement.device, f"fits on the device ({share})"
    return Placement.stream, f"too large for the device ({share})"


def resolved(
    cfg: DatasetConfig, dataset: TrainingData, input_shape: tuple[int, int, int], classes: int
) -> DatasetConfig:
    """The config with what was read from the data (shape, classes, mean and std): what the run records."""
    c, h, w = input_shape
    assert dataset.normalisation is not None
    mean, std = dataset.normalisation
    return replace(cfg, channels=c, height=h, width=w, classes=classes, mean=list(mean), std=list(std))


_LOADED: dict[tuple[object, ...], TrainingData] = {}


def load(cfg: DatasetConfig, device: torch.device, trusted: tuple[str, ...] = ()) -> TrainingData:
    """The trial's data, on the device or streamed; kept for later trials in this process."""
    key = (tuple(repr(v) for v in astuple(cfg)), str(device), trusted)
    if key in _LOADED:
        return _LOADED[key]
    facts = describe(cfg, trusted)
    counts = _counts(cfg, trusted)
    c, h, w = facts.input_shape
    placement, why = choose_placement(cfg, sum(counts) * c * h * w * 4, devices.free_memory(device))
    if cfg.kind is DatasetKind.paper and cfg.mean is not None and placement is Placement.device:
        loaded: TrainingData = data.load(cfg, device)  # the paper's path, exactly as before
    else:
        loaded = _load_split_by_split(cfg, device, trusted, placement, facts)
    log.info(
        "%s: %d train / %d test images %s: %s",
        cfg.name,
        loaded.train_count,
        loaded.test_count,
        f"on {device}" if loaded.placement == "device" else f"streamed to {device} ({cfg.workers} workers)",
        why,
    )
    _LOADED.clear()  # one dataset at a time: a sweep over datasets must not pile up memory
    _LOADED[key] = loaded
    return loaded


def _load_split_by_split(
    cfg: DatasetConfig, device: torch.device, trusted: tuple[str, ...], placement: Placement, facts: Facts
) -> TrainingData:
    train, test, where = open_splits(cfg, trusted)
    picked = [
        data.balanced_subset(split.labels, size, cfg.subset_seed) if size is not None and size < len(split) else None
        for split, size in ((train, cfg.train_size), (test, cfg.test_size))
    ]
    key = sources.describe_key(cfg)
    if cfg.mean is None or cfg.std is None:
        mean, std = sources.mean_and_std(cfg, _uint8_batches(train, cfg.workers, key))
    else:
        mean, std = list(cfg.mean), list(cfg.std)
    normalised = replace(cfg, mean=mean, std=std)
    labels = [s.labels if i is None else s.labels[i] for s, i in zip((train, test), picked, strict=True)]
    if placement is Placement.device:
        images = [_images(s, i, cfg.workers, key) for s, i in zip((train, test), picked, strict=True)]
        return data.DeviceData(
            data._to_device(images[0], normalised, device),
            labels[0].to(device),
            data._to_device(images[1], normalised, device),
            labels[1].to(device),
            where,
            (mean, std),
        )
    items = [
        s.items if i is None else torch.utils.data.Subset(s.items, i.tolist())
        for s, i in zip((train, test), picked, strict=True)
    ]
    return StreamedData(
        items[0],
        items[1],
        (len(labels[0]), len(labels[1])),
        facts.input_shape,
        (mean, std),
        device,
        cfg.workers,
        where,
    )


def _images(split: sources.Split, indices: torch.Tensor | None, workers: int, key: str) -> torch.Tensor:
    if split.images is not None:
        return split.images if indices is None else split.images[indices]
    return sources.read_images(split, indices, workers, key)


def _uint8_batches(split: sources.Split, workers: int, key: str):  # type: ignore[no-untyped-def]
    """The whole training split in uint8 batches, for its statistics."""
    if split.images is not None:
        yield from split.images.split(sources.READ_BATCH)
        return
    loader = torch.utils.data.DataLoader(split.items, batch_size=sources.READ_BATCH, num_workers=workers)
    for images, _ in loader:
        yield images
