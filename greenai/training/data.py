"""Datasets as normalised tensors on the training device, batches drawn by index.

Where the files come from, in order: `dataset.root`; known system locations (Debian's
`dataset-fashion-mnist`); what an earlier run left in `dataset.cache_dir`; torchvision's
download. Every file is checked before use: full-size files against the official md5,
subsets (a user's smaller copy) for structure: magic number, header and size.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision import datasets

from greenai.config import DatasetConfig, DatasetName
from greenai.errors import DatasetError
from greenai.files import write_atomic

log = logging.getLogger(__name__)

SYSTEM_LOCATIONS: dict[DatasetName, list[Path]] = {
    DatasetName.fashion_mnist: [Path("/usr/share/datasets/fashion-mnist")],
    DatasetName.cifar10: [],
}

# md5 of the decompressed IDX files of Fashion-MNIST as published by Zalando Research.
FASHION_FILES = {
    "train-images-idx3-ubyte": ("f4a8712d7a061bf5bd6d2ca38dc4d50a", 60000),
    "train-labels-idx1-ubyte": ("9018921c3c673c538a1fc5bad174d6f9", 60000),
    "t10k-images-idx3-ubyte": ("8181f5470baa50b63fa0f6fddb340f0a", 10000),
    "t10k-labels-idx1-ubyte": ("15d484375f8d13e6eb1aabb0c3f46965", 10000),
}
IDX_MAGIC = {"images": 0x00000803, "labels": 0x00000801}
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_BATCH_IMAGES = 10000


@dataclass
class DeviceData:
    """Both splits as tensors on one device: images normalised float32, labels int64."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    source: str  # where the files were read from, for the run's tags
    # The mean and std the images were normalised with (None: not known here).
    normalisation: tuple[list[float], list[float]] | None = None

    placement = "device"  # as opposed to training.streaming.StreamedData's "streamed"

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.x_train.shape[1:]
        return int(c), int(h), int(w)

    @property
    def device(self) -> torch.device:
        return self.x_train.device

    @property
    def train_count(self) -> int:
        return len(self.y_train)

    @property
    def test_count(self) -> int:
        return len(self.y_test)

    def test_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(self.y_test), batch_size):
            yield self.x_test[start : start + batch_size], self.y_test[start : start + batch_size]

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of shuffled batches, drawn by index (no per-sample DataLoader)."""
        order = torch.randperm(len(self.y_train), generator=generator).to(self.y_train.device)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            yield self.x_train[idx], self.y_train[idx]


# ---------------------------------------------------------------- finding the files


def _no_files_error(cfg: DatasetConfig, tried: str) -> DatasetError:
    system = ", ".join(str(p) for p in SYSTEM_LOCATIONS[DatasetName(cfg.name)]) or "none known"
    apt = " or install Debian's dataset-fashion-mnist" if cfg.name == DatasetName.fashion_mnist else ""
    return DatasetError(
        f"dataset={cfg.name}: no files found ({tried}); get them one of three ways: "
        f"set dataset.root=DIR to a folder that holds them, put them in a system location "
        f"({system}){apt}, or run once with network access and dataset.download=true "
        f"(torchvision downloads them into dataset.cache_dir={cfg.cache_dir})"
    )


def _cache_root(cfg: DatasetConfig) -> Path:
    return Path(cfg.cache_dir).expanduser()


def _fashion_file(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _fashion_folders(base: Path) -> list[Path]:
    return [base / "FashionMNIST" / "raw", base / "raw", base]


def _find_fashion(base: Path) -> dict[str, Path] | None:
    """The four IDX files (plain or .gz) in the first folder under `base` that has any of them."""
    for folder in _fashion_folders(base):
        found = {name: _fashion_file(folder, name) for name in FASHION_FILES}
        if any(found.values()):
            missing = [name for name, path in found.items() if path is None]
            if missing:
                raise DatasetError(f"dataset.root={base}: {folder} lacks {', '.join(missing)} (plain or .gz)")
            return {name: path for name, path in found.items() if path is not None}
    return None


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError) as exc:
        raise DatasetError(f"{path}: cannot be read ({exc})") from exc


def check_idx(path: Path, content: bytes, kind: str) -> int:
    """Validate an IDX file's magic number, header and size; return its item count."""
    name = path.name.removesuffix(".gz")
    if len(content) < 8:
        raise DatasetError(f"{path}: truncated ({len(content)} bytes, not even an IDX header)")
    magic = int.from_bytes(content[0:4], "big")
    if magic != IDX_MAGIC[kind]:
        raise DatasetError(f"{path}: wrong magic number {magic:#010x}, expected {IDX_MAGIC[kind]:#010x} for IDX {kind}")
    dims = 3 if kind == "images" else 1
    header = 4 + 4 * dims
    shape = [int.from_bytes(content[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    expected = header + (shape[0] * shape[1] * shape[2] if kind == "images" else shape[0])
    if len(content) != expected:
        raise DatasetError(f"{path}: truncated or padded: {len(content)} bytes, header {shape} needs {expected}")
    reference_md5, full_count = FASHION_FILES[name]
    # Full-size files claim to be the official ones, so the official md5 applies.
    if shape[0] == full_count and (digest := hashlib.md5(content).hexdigest()) != reference_md5:
        raise DatasetError(f"{path}: md5 {digest} differs from the official {reference_md5}")
    return shape[0]


def _prepare_fashion(found: dict[str, Path], cache: Path) -> Path:
    """Check the files and put them, decompressed, where torchvision's FashionMNIST reads them."""
    counts = {}
    plain_in_place = all(
        p.suffix != ".gz" and p.parent.name == "raw" and p.parent.parent.name == "FashionMNIST" for p in found.values()
    )
    raw = next(iter(found.values())).parent if plain_in_place else cache / "FashionMNIST" / "raw"
    for name, path in found.items():
        content = _read_bytes(path)
        counts[name] = check_idx(path, content, "images" if "images" in name else "labels")
        target = raw / name
        if not plain_in_place and (not target.is_file() or target.stat().st_size != len(content)):
            write_atomic(target, content)  # no half-written file is ever read back
    for split in ("train", "t10k"):
        images, labels = counts[f"{split}-images-idx3-ubyte"], counts[f"{split}-labels-idx1-ubyte"]
        if images != labels:
            raise DatasetError(f"{raw}: {split} split has {images} images but {labels} labels")
    return raw.parent.parent


def _fashion_root(cfg: DatasetConfig) -> tuple[Path, str]:
    cache = _cache_root(cfg)
    if cfg.root is not None:
        root = Path(cfg.root).expanduser()
        found = _find_fashion(root)
        if found is None:
            raise DatasetError(
                f"dataset.root={cfg.root}: no Fashion-MNIST IDX files there "
                "(plain or .gz, flat or in FashionMNIST/raw/)"
            )
        return _prepare_fashion(found, cache), str(root)
    for base in [*SYSTEM_LOCATIONS[DatasetName(cfg.name)], cache]:
        found = _find_fashion(base)
        if found is not None:
            return _prepare_fashion(found, cache), str(base)
    _download(cfg, lambda: datasets.FashionMNIST(str(cache), train=True, download=True))
    return cache, f"download into {cache}"


def _download(cfg: DatasetConfig, fetch) -> None:  # type: ignore[no-untyped-def]
    if not cfg.download:
        raise _no_files_error(cfg, "dataset.download=false")
    try:
        fetch()
    except Exception as exc:  # torchvision raises RuntimeError or URLError offline
        log.debug("download failed: %r", exc)
        raise _no_files_error(cfg, f"download failed: {str(exc).splitlines()[0][:120]}") from exc


# ---------------------------------------------------------------- CIFAR-10


def _cifar_folder(base: Path) -> Path | None:
    for folder in (base / CIFAR_FOLDER, base):
        if any(folder.glob("data_batch_*")) or (folder / "test_batch").is_file():
            # torchvision reads `<root>/cifar-10-batches-py`, so the folder must carry that name.
            if folder.name != CIFAR_FOLDER:
                raise DatasetError(f"dataset.root={base}: CIFAR-10 batches must sit in a folder named {CIFAR_FOLDER}")
            return folder
    return None


def _check_cifar_batch(path: Path, md5: str) -> None:
    """A batch must unpickle to `data` (N x 3072 uint8) and N `labels` in 0..9."""
    try:
        with path.open("rb") as f:
            batch = pickle.load(f, encoding="latin1")
        data, labels = batch["data"], batch.get("labels", batch.get("fine_labels"))
        shape_ok = data.ndim == 2 and data.shape[1] == 3072 and len(labels) == data.shape[0]
    except Exception as exc:  # corrupt pickles raise many kinds of errors
        raise DatasetError(f"{path}: not a readable CIFAR-10 batch ({type(exc).__name__}: {exc})") from exc
    if not shape_ok or str(data.dtype) != "uint8" or not all(0 <= int(y) < 10 for y in labels):
        raise DatasetError(f"{path}: not a CIFAR-10 batch (want N x 3072 uint8 data and N labels in 0..9)")
    if data.shape[0] == CIFAR_BATCH_IMAGES and hashlib.md5(path.read_bytes()).hexdigest() != md5:
        raise DatasetError(f"{path}: full-size batch whose md5 differs from the official {md5}")


def _cifar_class(folder: Path) -> type[datasets.CIFAR10]:
    """torchvision's CIFAR10, limited to the batches present (their structure already checked)."""
    official = dict(datasets.CIFAR10.train_list + datasets.CIFAR10.test_list)
    present = [name for name in official if (folder / name).is_file()]
    if "test_batch" not in present or not any(n.startswith("data_batch") for n in present):
        raise DatasetError(f"dataset.root={folder}: needs test_batch and at least one data_batch_N")
    for name in present:
        _check_cifar_batch(folder / name, official[name])
    complete = len(present) == len(official)
    if complete:
        return datasets.CIFAR10
    log.warning("CIFAR-10 in %s is partial (%s): md5 of the full set not checked", folder, ", ".join(present))
    # md5 None: torchvision then checks presence only; structure was checked above.
    return type(
        "PartialCIFAR10",
        (datasets.CIFAR10,),
        {
            "train_list": [[n, None] for n in present if n.startswith("data_batch")],
            "test_list": [["test_batch", None]],
            "meta": {**datasets.CIFAR10.meta, "md5": None},
        },
    )


def _cifar_root(cfg: DatasetConfig) -> tuple[Path, type[datasets.CIFAR10], str]:
    cache = _cache_root(cfg)
    if cfg.root is not None:
        folder = _cifar_folder(Path(cfg.root).expanduser())
        if folder is None:
            raise DatasetError(
                f"dataset.root={cfg.root}: no CIFAR-10 batches there "
                f"(want {CIFAR_FOLDER}/ with data_batch_N and test_batch)"
            )
        return folder.parent, _cifar_class(folder), str(folder)
    for base in [*SYSTEM_LOCATIONS[DatasetName(cfg.name)], cache]:
        folder = _cifar_folder(base)
        if folder is not None:
            return folder.parent, _cifar_class(folder), str(folder)
    _download(cfg, lambda: datasets.CIFAR10(str(cache), train=True, download=True))
    return cache, datasets.CIFAR10, f"download into {cache}"


# ---------------------------------------------------------------- tensors


def balanced_subset(labels: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    """Indices of a seeded subset with (almost) equal counts per class, sorted."""
    classes = torch.unique(labels)
    generator = torch.Generator().manual_seed(seed)
    base, extra = divmod(size, len(classes))
    chosen = []
    for i, cls in enumerate(classes.tolist()):
        members = torch.nonzero(labels == cls).flatten()
        want = base + (1 if i < extra else 0)
        if want > len(members):
            raise DatasetError(f"subset of {size}: class {cls} has only {len(members)} images, {want} needed")
        chosen.append(members[torch.randperm(len(members), generator=generator)[:want]])
    return torch.sort(torch.cat(chosen)).values


def _subset(
    x: torch.Tensor, y: torch.Tensor, size: int | None, seed: int, key: str
) -> tuple[torch.Tensor, torch.Tensor]:
    if size is None or size >= len(y):
        if size is not None and size > len(y):
            log.warning("%s=%d exceeds the %d images available: using all", key, size, len(y))
        return x, y
    idx = balanced_subset(y, size, seed)
    return x[idx], y[idx]


def _to_device(images: torch.Tensor, cfg: DatasetConfig, device: torch.device) -> torch.Tensor:
    """uint8 N x C x H x W -> normalised float32 on the device, in one conversion."""
    mean = torch.tensor(cfg.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(cfg.std, dtype=torch.float32).view(1, -1, 1, 1)
    return ((images.float() / 255.0 - mean) / std).contiguous().to(device)


def _read_splits(cfg: DatasetConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, str]:
    """uint8 images N x C x H x W and int64 labels for both splits, via torchvision's classes."""
    if cfg.name == DatasetName.fashion_mnist:
        root, where = _fashion_root(cfg)
        train = datasets.FashionMNIST(str(root), train=True, download=False)
        test = datasets.FashionMNIST(str(root), train=False, download=False)
        return train.data.unsqueeze(1), train.targets.long(), test.data.unsqueeze(1), test.targets.long(), where
    root, cls, where = _cifar_root(cfg)
    train, test = cls(str(root), train=True, download=False), cls(str(root), train=False, download=False)

    def images(split: datasets.CIFAR10) -> torch.Tensor:
        return torch.from_numpy(split.data).permute(0, 3, 1, 2)

    return images(train), torch.tensor(train.targets), images(test), torch.tensor(test.targets), where


def _naming_the_key(cfg: DatasetConfig, error: DatasetError) -> DatasetError:
    """A file problem, said as `dataset.root=DIR: ...` (or `dataset=NAME: ...`) first."""
    message = str(error)
    if message.startswith("dataset"):
        return error
    key = f"dataset.root={cfg.root}" if cfg.root is not None else f"dataset={cfg.name}"
    return DatasetError(f"{key}: {message}")


def torchvision_root(cfg: DatasetConfig) -> Path:
    """The folder torchvision's dataset class reads for `cfg` (the files checked first)."""
    return _fashion_root(cfg)[0] if cfg.name == DatasetName.fashion_mnist else _cifar_root(cfg)[0]


def check_files(cfg: DatasetConfig) -> str:
    """Find and verify the dataset's files (downloading them if that is the way); say where."""
    try:
        if cfg.name == DatasetName.fashion_mnist:
            return _fashion_root(cfg)[1]
        return _cifar_root(cfg)[2]
    except DatasetError as error:
        raise _naming_the_key(cfg, error) from None


def check_shape(cfg: DatasetConfig, images: torch.Tensor) -> None:
    shape = tuple(images.shape[1:])
    if shape != (cfg.channels, cfg.height, cfg.width):
        raise DatasetError(
            f"dataset={cfg.name}: files hold {shape} images, config says {(cfg.channels, cfg.height, cfg.width)}"
        )


_LOADED: dict[tuple[object, ...], DeviceData] = {}


def load(cfg: DatasetConfig, device: torch.device) -> DeviceData:
    """Both splits on `device`, subset if asked; kept in memory for later trials in this process."""
    key = (
        cfg.name,
        cfg.root,
        cfg.cache_dir,
        cfg.train_size,
        cfg.test_size,
        cfg.subset_seed,
        tuple(cfg.mean),
        tuple(cfg.std),
        str(device),
    )
    if key not in _LOADED:
        try:
            x_train, y_train, x_test, y_test, where = _read_splits(cfg)
        except DatasetError as error:
            raise _naming_the_key(cfg, error) from None
        shape = tuple(x_train.shape[1:])
        if shape != (cfg.channels, cfg.height, cfg.width):
            raise DatasetError(
                f"dataset={cfg.name}: files hold {shape} images, config says {(cfg.channels, cfg.height, cfg.width)}"
            )
        x_train, y_train = _subset(x_train, y_train, cfg.train_size, cfg.subset_seed, "dataset.train_size")
        x_test, y_test = _subset(x_test, y_test, cfg.test_size, cfg.subset_seed, "dataset.test_size")
        _LOADED.clear()  # one dataset at a time: a sweep over datasets must not pile up memory
        _LOADED[key] = DeviceData(
            _to_device(x_train, cfg, device),
            y_train.to(device),
            _to_device(x_test, cfg, device),
            y_test.to(device),
            where,
            (list(cfg.mean or ()), list(cfg.std or ())),
        )
        log.info("%s: %d train / %d test images from %s on %s", cfg.name, len(y_train), len(y_test), where, device)
    return _LOADED[key]
