"""Small datasets written in torchvision's on-disk formats (IDX files, CIFAR pickles)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


def class_images(labels: np.ndarray, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """uint8 images whose class shows as a bright band at a class-specific row, plus noise:
    easy enough that a model learns something in one epoch, so accuracy is meaningful."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, size=(len(labels), *shape), dtype=np.uint8)
    height = shape[-2] if len(shape) == 3 else shape[0]
    band = max(1, height // 10)
    for i, label in enumerate(labels):
        row = int(label) * band
        if len(shape) == 3:
            images[i, :, row : row + band, :] = 230
        else:
            images[i, row : row + band, :] = 230
    return images


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file (big-endian header: magic 0x08 0x<ndim>, then the dimensions, then bytes)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_fashion(root: Path, train: int = 400, test: int = 200, seed: int = 0, folder: str = "FashionMNIST") -> Path:
    """A small Fashion-MNIST in torchvision's layout: root/FashionMNIST/raw/*-ubyte (`folder`:
    MNIST or KMNIST for those of torchvision's classes, which read the same files)."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", train), ("t10k", test)):
        labels = np.arange(count) % 10
        write_idx(raw / f"{split}-images-idx3-ubyte", class_images(labels, (28, 28), seed + count))
        write_idx(raw / f"{split}-labels-idx1-ubyte", labels.astype(np.uint8))
    return root


def write_cifar(root: Path, train: int = 300, test: int = 100, seed: int = 0) -> Path:
    """A small CIFAR-10 in torchvision's pickle layout: root/cifar-10-batches-py/."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for name, count in (("data_batch_1", train), ("test_batch", test)):
        labels = [int(i % 10) for i in range(count)]
        images = class_images(np.array(labels), (3, 32, 32), seed + count).reshape(count, 3072)
        with (folder / name).open("wb") as f:
            pickle.dump({"batch_label": name, "labels": labels, "data": images}, f)
    with (folder / "batches.meta").open("wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)], "num_vis": 3072}, f)
    return root


def tiny_args(root: Path, cache: Path, epochs: int = 1, batch_size: int = 64) -> list[str]:
    """Overrides for a fast trial on a small dataset written by the test (a small batch_size
    makes epochs long enough for a test to act while one trains)."""
    return [f"dataset.root={root}", f"dataset.cache_dir={cache}", f"epochs={epochs}", f"batch_size={batch_size}"]


def write_image_folder(root: Path, train: int = 60, test: int = 30, size: tuple[int, int] = (20, 24)) -> Path:
    """Class-band PNG images in ImageFolder's layout: root/{train,test}/<class>/<n>.png, in 3
    classes, in colour, at a size other than a model's (so greenai must resize them)."""
    from PIL import Image

    for split, count in (("train", train), ("test", test)):
        labels = np.arange(count) % 3
        images = class_images(labels, (3, *size), seed=count)
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.transpose(1, 2, 0)).save(folder / f"{i}.png")
    return root
