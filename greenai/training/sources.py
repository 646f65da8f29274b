"""Image-classification data beyond the paper's two datasets, opened as map-style datasets whose
items are (uint8 C x H x W tensor, label):

- `dataset=torchvision dataset.name=MNIST`: a torchvision.datasets class, read from `dataset.root`
  (default: `dataset.cache_dir`), never downloaded where a root is given;
- `dataset=image_folder dataset.root=DIR`: torchvision's ImageFolder on DIR/train and DIR/test
  (or DIR/val), each holding one folder of images per class;
- `dataset=custom dataset._target_=mypkg.data.Images`: a user's map-style dataset, called as
  torchvision's are, `Images(train=True|False, **dataset.args)`, on the allow-list.

Images are converted by torchvision's transforms (v2) to uint8 tensors, to `dataset.channels`
and `dataset.height` x `dataset.width` where those are set. Also here: the per-channel mean and
standard deviation of a training split, computed once and kept in `dataset.cache_dir`.
"""

from __future__ import annotations

import difflib
import hashlib
import inspect
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets
from torchvision.transforms import v2

from greenai.config import TRUSTED_TARGETS, DatasetConfig, DatasetKind
from greenai.errors import ConfigError, DatasetError, failure_reason
from greenai.files import write_atomic
from greenai.training.models import check_trusted, locate

log = logging.getLogger(__name__)
READ_BATCH = 256  # images per batch when a split is read into memory or its statistics computed


@dataclass
class Split:
    """One split: its items (uint8 C x H x W, label) and every label, read once (subsets and
    class counts need them); `images` holds all images at once where the reader has them so."""

    items: Dataset
    labels: torch.Tensor  # int64
    images: torch.Tensor | None = None  # uint8 N x C x H x W

    def __len__(self) -> int:
        return len(self.labels)


class Items(Dataset):
    """A dataset's items as (uint8 C x H x W tensor, int label), converted by `transform`."""

    def __init__(self, dataset: Any, transform: v2.Transform) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.dataset[index]
        return self.transform(image), int(label)


class TensorItems(Dataset):
    """Images already in memory (the paper's datasets): the same items, without conversion."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])


def to_uint8(cfg: DatasetConfig) -> v2.Transform:
    """PIL image, array or tensor -> uint8 C x H x W, with the configured channels and size."""
    steps: list[v2.Transform] = [v2.ToImage(), v2.ToDtype(torch.uint8, scale=True)]
    if cfg.height is not None and cfg.width is not None:
        steps.append(v2.Resize((cfg.height, cfg.width), antialias=True))
    if cfg.channels is not None:
        steps.append(_Channels(cfg.channels))
    return v2.Compose(steps)


class _Channels(v2.Transform):
    """Grey images to `channels` copies, colour images to grey where one channel is asked for."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, image: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if image.shape[0] == self.channels:
            return image
        if self.channels == 1 and image.shape[0] in (3, 4):
            return v2.functional.rgb_to_grayscale(image[:3])
        if image.shape[0] == 1:
            return image.expand(self.channels, *image.shape[1:]).clone()
        raise DatasetError(f"dataset.channels={self.channels}: cannot convert {image.shape[0]}-channel images")


def labels_of(dataset: Any) -> torch.Tensor:
    """Every label, from the attribute torchvision's classes keep them in, else item by item."""
    for attribute in ("targets", "labels", "_labels", "_samples"):
        values = getattr(dataset, attribute, None)
        if values is not None and len(values) == len(dataset):
            if attribute == "_samples":
                values = [label for _, label in values]
            return torch.as_tensor(values, dtype=torch.long).reshape(-1)
    return torch.tensor([int(dataset[i][1]) for i in range(len(dataset))], dtype=torch.long)


# ---------------------------------------------------------------- torchvision.datasets


def torchvision_classes() -> list[str]:
    return [
        name
        for name in datasets.__all__
        if inspect.isclass(cls := getattr(datasets, name)) and issubclass(cls, datasets.VisionDataset)
    ]


def _torchvision_class(name: str) -> type:
    known = torchvision_classes()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f"closest: {', '.join(close)}" if close else f"choose one of {', '.join(known)}"
        raise ConfigError("dataset.name", name, f"not a torchvision dataset; {hint}")
    return getattr(datasets, name)


def _where_files_go(cls: type, root: Path) -> Path:
    """Where torchvision's class reads its files under `root`, for the error that says so."""
    if getattr(cls, "base_folder", None):
        return root / cls.base_folder  # type: ignore[attr-defined]
    if issubclass(cls, datasets.MNIST):
        return root / cls.__name__ / "raw"
    return root / cls.__name__.lower()


def _split_arguments(cls: type, args: dict[str, Any], train: bool) -> dict[str, Any]:
    """train=True|False where the class takes it (EMNIST's `split` names its subset and it takes
    train through **kwargs); split='train'|'test' otherwise."""
    accepted = inspect.signature(cls).parameters
    if "train" in accepted or "split" in args:
        return {"train": train}
    if "split" in accepted:
        return {"split": "train" if train else "test"}
    raise ConfigError("dataset.name", cls.__name__, "has no train and test splits greenai can ask for")


def _open_torchvision(cfg: DatasetConfig, train: bool, trusted: tuple[str, ...]) -> Any:
    cls = _torchvision_class(cfg.name)
    root = Path(cfg.root or cfg.cache_dir).expanduser()
    kwargs = {**_split_arguments(cls, cfg.args, train), **cfg.args}
    try:
        return cls(str(root), download=False, **kwargs)
    except TypeError as exc:
        raise ConfigError("dataset.args", cfg.args, f"torchvision's {cfg.name} does not take them: {exc}") from exc
    except (RuntimeError, FileNotFoundError, OSError) as missing:
        if cfg.root is None and cfg.download:
            try:
                return cls(str(root), download=True, **kwargs)
            except Exception as exc:  # offline: URLError, RuntimeError, ...
                log.debug("download failed: %r", exc)
        where = _where_files_go(cls, root)
        key = f"dataset.root={cfg.root}" if cfg.root else f"dataset=torchvision dataset.name={cfg.name}"
        raise DatasetError(
            f"{key}: torchvision's {cfg.name} cannot read its files under {root} ({failure_reason(missing)}); "
            f"torchvision.datasets.{cfg.name}(root=DIR) reads them from {where}: put them there and set "
            "dataset.root=DIR"
        ) from missing


# ---------------------------------------------------------------- ImageFolder


def _folder(cfg: DatasetConfig, train: bool) -> Path:
    root = Path(str(cfg.root)).expanduser()
    if not root.is_dir():
        raise DatasetError(f"dataset.root={cfg.root}: no such folder")
    names = ("train",) if train else ("test", "val")
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise DatasetError(
        f"dataset.root={cfg.root}: needs a {' or '.join(n + '/' for n in names)} folder with one folder of images "
        "per class (DIR/train/<class>/<image>, DIR/test/<class>/<image>)"
    )


def _open_image_folder(cfg: DatasetConfig, train: bool, trusted: tuple[str, ...]) -> Any:
    folder = _folder(cfg, train)
    try:
        return datasets.ImageFolder(str(folder), **cfg.args)
    except (FileNotFoundError, RuntimeError) as exc:  # no class folders, or no images in them
        raise DatasetError(f"dataset.root={cfg.root}: {folder} holds no images in class folders ({exc})") from exc


# ---------------------------------------------------------------- a user's dataset


def _open_custom(cfg: DatasetConfig, train: bool, trusted: tuple[str, ...]) -> Any:
    target = str(cfg._target_)
    check_trusted("dataset._target_", target, trusted)
    locate("dataset._target_", target)
    try:
        return instantiate(
            {"_target_": target, "train": train, **cfg.args},
            _convert_="all",
            _execution_whitelist_=[*TRUSTED_TARGETS, *trusted],
        )
    except Exception as exc:  # Hydra wraps the constructor's error: its cause tells what went wrong
        why = failure_reason(exc.__cause__ or exc)
        raise ConfigError("dataset._target_", target, f"cannot be built with train={train}: {why}") from exc


OPENERS = {
    DatasetKind.torchvision: _open_torchvision,
    DatasetKind.image_folder: _open_image_folder,
    DatasetKind.custom: _open_custom,
}


def open_split(cfg: DatasetConfig, train: bool, trusted: Iterable[str] = ()) -> Split:
    """One split of a non-paper dataset, as items of the configured shape, with its labels;
    `trusted`: the config's trusted_targets, which a custom dataset's class must be on."""
    raw = OPENERS[cfg.kind](cfg, train, tuple(trusted))
    which = "train" if train else "test"
    if len(raw) == 0:
        raise DatasetError(f"{describe_key(cfg)}: the {which} split is empty")
    try:
        labels = labels_of(raw)
        items = Items(raw, to_uint8(cfg))
        items[0]  # one item converted now: a format the transforms cannot read fails here, in one line
    except DatasetError:
        raise
    except Exception as exc:  # a user's dataset, or odd files, fail in many ways
        raise DatasetError(f"{describe_key(cfg)}: cannot read its {which} items ({failure_reason(exc)})") from exc
    return Split(items, labels)


def describe_key(cfg: DatasetConfig) -> str:
    if cfg.kind is DatasetKind.custom:
        return f"dataset._target_={cfg._target_}"
    if cfg.kind is DatasetKind.image_folder:
        return f"dataset.root={cfg.root}"
    return f"dataset.name={cfg.name}"


def read_images(split: Split, indices: torch.Tensor | None, workers: int, key: str) -> torch.Tensor:
    """The split's images (those at `indices`) as one uint8 N x C x H x W tensor, read in batches."""
    items = split.items if indices is None else torch.utils.data.Subset(split.items, indices.tolist())
    loader = DataLoader(items, batch_size=READ_BATCH, num_workers=workers)
    try:
        return torch.cat([images for images, _ in loader])
    except RuntimeError as exc:  # default_collate cannot stack images of different sizes
        raise DatasetError(
            f"{key}: images differ in shape ({failure_reason(exc)}); set dataset.height and dataset.width "
            "(and dataset.channels) to convert them all"
        ) from exc


# ---------------------------------------------------------------- normalisation constants


def stats_path(cfg: DatasetConfig) -> Path:
    """The cache file of a dataset's statistics: one per source and image conversion."""
    identity = {
        "kind": cfg.kind.value,
        "name": cfg.name,
        "root": str(Path(cfg.root).expanduser().resolve()) if cfg.root else None,
        "target": cfg._target_,
        "args": cfg.args,
        "shape": [cfg.channels, cfg.height, cfg.width],
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return Path(cfg.cache_dir).expanduser() / "stats" / f"{cfg.name}-{digest}.json"


def channel_stats(batches: Iterable[torch.Tensor]) -> tuple[list[float], list[float], int]:
    """Per-channel mean and standard deviation of uint8 image batches, in [0, 1] (float64 sums)."""
    total = squares = None
    pixels = images = 0
    for batch in batches:
        values = batch.to(torch.float64).div_(255.0).transpose(0, 1).flatten(1)  # C x (N*H*W)
        total = values.sum(dim=1) if total is None else total + values.sum(dim=1)
        squares = (values**2).sum(dim=1) if squares is None else squares + (values**2).sum(dim=1)
        pixels += values.shape[1]
        images += len(batch)
    if total is None or squares is None:
        raise DatasetError("no training images to compute the mean and standard deviation of")
    mean = total / pixels
    std = (squares / pixels - mean**2).clamp_min(0).sqrt().clamp_min(1e-6)
    return [round(v, 6) for v in mean.tolist()], [round(v, 6) for v in std.tolist()], images


def mean_and_std(cfg: DatasetConfig, batches: Iterable[torch.Tensor]) -> tuple[list[float], list[float]]:
    """The training split's mean and std: read from the cache, else computed once and kept."""
    path = stats_path(cfg)
    if path.is_file():
        try:
            kept = json.loads(path.read_text())
            return list(kept["mean"]), list(kept["std"])
        except (ValueError, KeyError, OSError):
            log.warning("%s: unreadable, computing the statistics again", path)
    mean, std, images = channel_stats(batches)
    try:
        # Atomic: a concurrent trial reads the whole file or none.
        write_atomic(path, json.dumps({"mean": mean, "std": std, "images": images, "dataset": cfg.name}))
    except OSError as exc:  # a read-only cache costs a recomputation next time, nothing else
        log.warning("cannot keep the statistics in %s (%s)", path, exc)
    log.info("%s: mean %s, std %s computed from %d training images (kept in %s)", cfg.name, mean, std, images, path)
    return mean, std
