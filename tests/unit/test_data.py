"""Finding, checking and loading datasets; subsets; the offline error."""

from __future__ import annotations

import gzip
import hashlib
import shutil
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from datasets_on_disk import write_fashion, write_idx

from greenai.config import DatasetConfig, DatasetName
from greenai.errors import DatasetError
from greenai.training import data

CPU = torch.device("cpu")


def fashion(root: Path | None, cache: Path, **kw) -> DatasetConfig:
    return DatasetConfig(
        name=DatasetName.fashion_mnist,
        channels=1,
        height=28,
        width=28,
        mean=[0.286],
        std=[0.353],
        root=None if root is None else str(root),
        cache_dir=str(cache),
        **kw,
    )


def cifar(root: Path | None, cache: Path, **kw) -> DatasetConfig:
    return DatasetConfig(
        name=DatasetName.cifar10,
        channels=3,
        height=32,
        width=32,
        mean=[0.49, 0.48, 0.45],
        std=[0.25, 0.24, 0.26],
        root=None if root is None else str(root),
        cache_dir=str(cache),
        **kw,
    )


@pytest.fixture(autouse=True)
def fresh_memory():
    data._LOADED.clear()
    yield
    data._LOADED.clear()


def test_reads_idx_files_in_torchvision_layout(fashion_root, tmp_path):
    loaded = data.load(fashion(fashion_root, tmp_path / "cache"), CPU)
    assert loaded.x_train.shape == (400, 1, 28, 28) and loaded.x_test.shape == (200, 1, 28, 28)
    assert loaded.x_train.dtype == torch.float32 and loaded.y_train.dtype == torch.int64
    assert loaded.y_train[:12].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    raw = np.frombuffer((fashion_root / "FashionMNIST/raw/train-images-idx3-ubyte").read_bytes()[16:], dtype=np.uint8)
    expected = (raw[:784].astype(np.float32) / 255 - 0.286) / 0.353
    assert torch.allclose(loaded.x_train[0].flatten(), torch.from_numpy(expected))


def test_reads_flat_gz_files_like_debians_package(tmp_path):
    plain = write_fashion(tmp_path / "plain") / "FashionMNIST" / "raw"
    flat = tmp_path / "flat"
    flat.mkdir()
    for f in plain.iterdir():
        with gzip.open(flat / f"{f.name}.gz", "wb") as out:
            out.write(f.read_bytes())
    loaded = data.load(fashion(flat, tmp_path / "cache"), CPU)
    assert len(loaded.y_train) == 400
    assert (tmp_path / "cache/FashionMNIST/raw/train-images-idx3-ubyte").is_file()  # decompressed once, for torchvision


def test_reads_cifar_pickles_even_a_partial_set(cifar_root, tmp_path):
    loaded = data.load(cifar(cifar_root, tmp_path / "cache"), CPU)
    assert loaded.x_train.shape == (300, 3, 32, 32) and loaded.x_test.shape == (100, 3, 32, 32)
    assert loaded.input_shape == (3, 32, 32)


def test_root_may_name_the_cifar_folder_itself(cifar_root, tmp_path):
    loaded = data.load(cifar(cifar_root / "cifar-10-batches-py", tmp_path / "cache"), CPU)
    assert len(loaded.y_test) == 100


def test_subset_is_class_balanced_and_seeded(fashion_root, tmp_path):
    cfg = fashion(fashion_root, tmp_path / "cache", train_size=100, test_size=50)
    first = data.load(cfg, CPU)
    assert torch.bincount(first.y_train).tolist() == [10] * 10
    assert torch.bincount(first.y_test).tolist() == [5] * 10
    data._LOADED.clear()
    again = data.load(cfg, CPU)
    assert torch.equal(first.x_train, again.x_train)
    data._LOADED.clear()
    other = data.load(fashion(fashion_root, tmp_path / "cache", train_size=100, subset_seed=7), CPU)
    assert not torch.equal(first.x_train, other.x_train)


def test_uneven_subset_spreads_the_remainder():
    labels = torch.arange(1000) % 10
    counts = torch.bincount(labels[data.balanced_subset(labels, 23, seed=0)]).tolist()
    assert sorted(counts, reverse=True) == [3, 3, 3] + [2] * 7


def test_batches_cover_the_split_once_per_epoch(fashion_root, tmp_path):
    loaded = data.load(fashion(fashion_root, tmp_path / "cache"), CPU)
    seen = torch.cat([y for _, y in loaded.train_batches(64, torch.Generator().manual_seed(0))])
    assert len(seen) == 400 and torch.equal(torch.sort(seen).values, torch.sort(loaded.y_train).values)


def test_nothing_anywhere_names_the_three_ways_to_get_data(tmp_path, monkeypatch):
    monkeypatch.setitem(data.SYSTEM_LOCATIONS, DatasetName.fashion_mnist, [tmp_path / "no-system-copy"])
    with pytest.raises(DatasetError) as info:
        data.load(fashion(None, tmp_path / "cache", download=False), CPU)
    message = str(info.value)
    assert "dataset.root" in message and "dataset-fashion-mnist" in message and "download" in message
    assert "\n" not in message


def test_offline_download_failure_is_the_same_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(data.SYSTEM_LOCATIONS, DatasetName.cifar10, [])

    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(data.datasets.CIFAR10, "download", offline)
    with pytest.raises(DatasetError, match="download failed.*dataset.root"):
        data.load(cifar(None, tmp_path / "cache"), CPU)


def test_missing_file_in_root_is_named(fashion_root, tmp_path):
    (fashion_root / "FashionMNIST/raw/t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetError, match="lacks t10k-labels-idx1-ubyte"):
        data.load(fashion(fashion_root, tmp_path / "cache"), CPU)


def test_truncated_idx_file_is_refused(fashion_root, tmp_path):
    path = fashion_root / "FashionMNIST/raw/train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DatasetError, match="truncated"):
        data.load(fashion(fashion_root, tmp_path / "cache"), CPU)


def test_wrong_magic_number_is_refused(fashion_root, tmp_path):
    path = fashion_root / "FashionMNIST/raw/train-labels-idx1-ubyte"
    path.write_bytes(b"\x00\x00\x08\x03" + path.read_bytes()[4:])
    with pytest.raises(DatasetError, match="wrong magic number"):
        data.load(fashion(fashion_root, tmp_path / "cache"), CPU)


def test_full_size_file_with_a_bad_md5_is_refused(tmp_path):
    # 10,000 labels is the official test split's size, so the official md5 applies.
    root = write_fashion(tmp_path / "f", train=100, test=100)
    write_idx(root / "FashionMNIST/raw/t10k-labels-idx1-ubyte", (np.arange(10000) % 10).astype(np.uint8))
    write_idx(root / "FashionMNIST/raw/t10k-images-idx3-ubyte", np.zeros((10000, 28, 28), dtype=np.uint8))
    with pytest.raises(DatasetError, match="md5"):
        data.load(fashion(root, tmp_path / "cache"), CPU)


def test_corrupt_gz_is_refused(tmp_path):
    plain = write_fashion(tmp_path / "plain") / "FashionMNIST" / "raw"
    flat = tmp_path / "flat"
    shutil.copytree(plain, flat)
    (flat / "train-images-idx3-ubyte").unlink()
    (flat / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b this is not gzip")
    with pytest.raises(DatasetError, match="cannot be read"):
        data.load(fashion(flat, tmp_path / "cache"), CPU)


def test_corrupt_cifar_pickle_is_refused(cifar_root, tmp_path):
    (cifar_root / "cifar-10-batches-py/data_batch_1").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="not a readable CIFAR-10 batch"):
        data.load(cifar(cifar_root, tmp_path / "cache"), CPU)


def test_mismatched_image_and_label_counts_are_refused(fashion_root, tmp_path):
    write_idx(fashion_root / "FashionMNIST/raw/train-labels-idx1-ubyte", (np.arange(300) % 10).astype(np.uint8))
    with pytest.raises(DatasetError, match="400 images but 300 labels"):
        data.load(fashion(fashion_root, tmp_path / "cache"), CPU)


def test_debians_genuine_files_pass_the_official_md5():
    debian = Path("/usr/share/datasets/fashion-mnist")
    assert debian.is_dir(), "install Debian's dataset-fashion-mnist (CI does: apt-get install dataset-fashion-mnist)"
    for name, (md5, count) in data.FASHION_FILES.items():
        content = gzip.open(debian / f"{name}.gz").read()
        assert hashlib.md5(content).hexdigest() == md5
        assert data.check_idx(debian / f"{name}.gz", content, "images" if "images" in name else "labels") == count
