"""Benchmark 8: ResNet-18 (torchvision's, model=torchvision model.arch=resnet18) on CIFAR-sized
data, one training epoch each way, all in the same run:

- the data on the device (greenai's DeviceData: normalised tensors, batches drawn by index)
  against streamed (dataset.placement=stream: a DataLoader with workers, pinned memory on a GPU);
- fp32 against bf16 (precision=bf16: torch.autocast), on the device.

    python benchmarks/models_data.py [--quick] [--root DIR] [--train-size N] [--workers 2] [--repeats 2]

Each figure is the best of --repeats epochs, each from the same seeded weights; the ratios are
against the same run's baseline (data on the device, fp32). `--root`: a folder holding
cifar-10-batches-py (the genuine images); without it, synthetic class-band images of CIFAR's
shape are written to a scratch folder. `--quick`: 256 images, one repeat, for a CPU in a minute.
On a CPU neither streaming nor bf16 is expected to pay; the claim is for GPUs.
"""

from __future__ import annotations

import argparse
import itertools
import pickle
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from _sweeps import shipped_dataset

from greenai.config import EnergyConfig, ModelName, Placement, Precision
from greenai.energy import meters
from greenai.training import inputs, models
from greenai.training.loop import Hyperparameters, make_optimizer, train_epoch, train_on
from greenai.training.precision import Amp

BATCH = 128


def synthetic_cifar(root: Path, train: int, test: int) -> Path:
    """CIFAR-10's pickle layout, images with a bright class-specific band and noise."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, count in (("data_batch_1", train), ("test_batch", test)):
        labels = [i % 10 for i in range(count)]
        images = rng.integers(0, 60, size=(count, 3, 32, 32), dtype=np.uint8)
        for i, label in enumerate(labels):
            images[i, :, 3 * label : 3 * label + 3] = 230
        with (folder / name).open("wb") as f:
            pickle.dump({"labels": labels, "data": images.reshape(count, 3072)}, f)
    with (folder / "batches.meta").open("wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)
    return root


def epoch_energy(meter: meters.Meter, step: Callable[[], float]) -> tuple[float, float | None]:
    meter.begin("epoch")
    step()
    reading = meter.end("epoch")
    return reading.seconds, reading.total_j


def warm_up(spec: models.ArchitectureSpec, data: inputs.TrainingData, amp: Amp) -> None:
    """Two steps of one case before any is measured: the loader's workers started, each
    precision's kernels chosen and the allocator's pools filled, so no epoch pays for them."""
    model = models.build(spec).to(data.device)
    optimizer = make_optimizer(model, Hyperparameters(1e-3, 0.9, 0.999, 1e-8, 0.0))
    batches = data.train_batches(BATCH, torch.Generator().manual_seed(0))
    train_on(model, optimizer, list(itertools.islice(batches, 2)), amp)


def one_epoch(spec: models.ArchitectureSpec, data: inputs.TrainingData, amp: Amp, meter: meters.Meter):  # type: ignore[no-untyped-def]
    torch.manual_seed(1234)
    model = models.build(spec).to(data.device)
    optimizer = make_optimizer(model, Hyperparameters(1e-3, 0.9, 0.999, 1e-8, 0.0))
    return epoch_energy(
        meter, lambda: train_epoch(model, optimizer, data, BATCH, torch.Generator().manual_seed(1234), amp=amp)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="256 images, one repeat (a 2-core CPU in about a minute)")
    parser.add_argument("--root", help="a folder holding cifar-10-batches-py (default: synthetic images)")
    parser.add_argument("--train-size", type=int, help="training images (default: 4000; 256 with --quick)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    train_size = args.train_size or (256 if args.quick else 4000)
    repeats = 1 if args.quick else args.repeats
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    meter = meters.make_meter(EnergyConfig(), device)
    with tempfile.TemporaryDirectory() as scratch:
        root = args.root or synthetic_cifar(Path(scratch) / "data", train_size, 100)
        cfg = shipped_dataset("cifar10", Path(scratch) / "cache", root=str(root), train_size=train_size, test_size=100)
        spec = models.ArchitectureSpec(ModelName.torchvision, (3, 32, 32), 0, 0, arch="resnet18")
        on_device = inputs.load(replace(cfg, placement=Placement.device), device)
        streamed = inputs.load(replace(cfg, placement=Placement.stream, workers=args.workers), device)
        cases = {
            "device, fp32": (on_device, Precision.fp32),
            "streamed, fp32": (streamed, Precision.fp32),
            "device, bf16": (on_device, Precision.bf16),
        }
        for data, precision in cases.values():
            warm_up(spec, data, Amp(precision, device))
        best = {
            name: min(one_epoch(spec, d, Amp(p, device), meter) for _ in range(repeats))
            for name, (d, p) in cases.items()
        }
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"one epoch of ResNet-18 on {on_device.train_count} {'genuine' if args.root else 'synthetic'} CIFAR-sized "
        f"images, batch {BATCH}, {where}; energy {meter.source.value} ({meter.description}); best of {repeats}"
    )
    base_s, base_j = best["device, fp32"]
    for name, (seconds, joules) in best.items():
        ratio = f"{seconds / base_s:5.2f}x time" + (f", {joules / base_j:5.2f}x energy" if joules and base_j else "")
        print(f"  {name:<15}: {seconds:7.2f} s {joules or 0:9.1f} J   {ratio} (against device, fp32)")
    if device.type == "cpu":
        print("  note: on a CPU, streaming adds worker processes and bf16 is emulated: neither is expected to pay")
    if args.workers and meter.source is meters.Source.estimated:
        print("  note: the CPU estimate counts this process only: the DataLoader workers' energy is missing above")


if __name__ == "__main__":
    main()
