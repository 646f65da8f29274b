"""Data streamed to the device batch by batch, for datasets too large to keep there: torch's
DataLoader with worker processes and pinned memory (on a GPU), the images sent as uint8 (a
quarter of float32's bytes) and normalised on the device.

The batches are those DeviceData.train_batches draws: one randperm per epoch from the trial's
generator, cut in order, so a training streams exactly the images it would see on the device
(tests/unit/test_data.py holds that).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

Batch = tuple[torch.Tensor, torch.Tensor]


class _EpochOrder(Sampler[int]):
    """The order of the epoch being read: set before each epoch, read by the loader's main process."""

    def __init__(self, size: int) -> None:
        self.order: Sequence[int] = range(size)

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self) -> Iterator[int]:
        return iter(self.order)


class StreamedData:
    placement = "streamed"

    def __init__(
        self,
        train: Dataset,
        test: Dataset,
        counts: tuple[int, int],
        input_shape: tuple[int, int, int],
        normalisation: tuple[Sequence[float], Sequence[float]],
        device: torch.device,
        workers: int,
        source: str,
    ) -> None:
        self.train, self.test, self.device, self.workers, self.source = train, test, device, workers, source
        self.train_count, self.test_count = counts
        self.input_shape = input_shape
        mean, std = normalisation
        self.normalisation = (list(mean), list(std))
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self._order = _EpochOrder(self.train_count)
        self._loaders: dict[tuple[str, int], DataLoader] = {}

    def _loader(self, split: str, batch_size: int) -> DataLoader:
        key = (split, batch_size)
        if key not in self._loaders:
            self._loaders[key] = DataLoader(
                self.train if split == "train" else self.test,
                batch_size=batch_size,
                sampler=self._order if split == "train" else None,
                num_workers=self.workers,
                pin_memory=self.device.type == "cuda",
                persistent_workers=self.workers > 0,  # started once, not every epoch
            )
        return self._loaders[key]

    def _on_device(self, images: torch.Tensor, labels: torch.Tensor) -> Batch:
        """uint8 -> normalised float32 on the device, as data.DeviceData's images are."""
        images = images.to(self.device, non_blocking=True)
        return (images.float() / 255.0 - self.mean) / self.std, labels.to(self.device, non_blocking=True)

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        self._order.order = torch.randperm(self.train_count, generator=generator).tolist()
        for images, labels in self._loader("train", batch_size):
            yield self._on_device(images, labels)

    def test_batches(self, batch_size: int) -> Iterator[Batch]:
        for images, labels in self._loader("test", batch_size):
            yield self._on_device(images, labels)
