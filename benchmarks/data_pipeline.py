"""Benchmark 3: one training epoch with greenai's device-resident tensors against torchvision's
DataLoader with per-sample transforms (ToTensor, Normalize): same model, data, seed, batch size.

    python benchmarks/data_pipeline.py [--train-size 60000] [--workers 0] [--repeats 2]

Prints wall time and energy per epoch of both pipelines and their ratios (best of --repeats).
Targets: >= 1.3x faster on a CPU, >= 8x on a GPU.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from _sweeps import fashion_mnist
from torch import nn
from torchvision import datasets, transforms

from greenai.config import EnergyConfig, ModelName
from greenai.energy import meters as energy
from greenai.training import data, models
from greenai.training.loop import Hyperparameters, make_optimizer, train_epoch, train_on


def fresh_model(device: torch.device) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(1234)
    model = models.build(models.ArchitectureSpec(ModelName.simplecnn, (1, 28, 28), 2, 3)).to(device)
    return model, make_optimizer(model, Hyperparameters(1e-3, 0.9, 0.999, 1e-8, 0.0))


def loader_epoch(
    model: nn.Module, optimizer: torch.optim.Optimizer, loader: torch.utils.data.DataLoader, device: torch.device
) -> float:
    """The same training step as greenai's, fed by the DataLoader."""
    batches = ((x.to(device, non_blocking=True), y.to(device, non_blocking=True)) for x, y in loader)
    return train_on(model, optimizer, batches)


def measured(meter: energy.Meter, step) -> tuple[float, float | None]:  # type: ignore[no-untyped-def]
    meter.begin("epoch")
    step()
    reading = meter.end("epoch")
    return reading.seconds, reading.total_j


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-size", type=int, default=60000)
    parser.add_argument(
        "--workers", type=int, default=0, help="DataLoader workers (their CPU time escapes the CPU estimate)"
    )
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--root", help="a Fashion-MNIST folder (default: system locations, then the cache)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    meter = energy.make_meter(EnergyConfig(), device)
    with tempfile.TemporaryDirectory() as cache:
        cfg = fashion_mnist(cache, root=args.root, train_size=args.train_size)
        start = time.perf_counter()
        tensors = data.load(cfg, device)
        setup = time.perf_counter() - start
        pipeline = transforms.Compose([transforms.ToTensor(), transforms.Normalize(cfg.mean, cfg.std)])
        train = datasets.FashionMNIST(str(data.torchvision_root(cfg)), train=True, transform=pipeline)
        subset = train
        if args.train_size < len(train):
            subset = torch.utils.data.Subset(train, data.balanced_subset(train.targets, args.train_size, 0).tolist())
        loader = torch.utils.data.DataLoader(
            subset,
            batch_size=512,
            shuffle=True,
            num_workers=args.workers,
            pin_memory=device.type == "cuda",
            generator=torch.Generator().manual_seed(1234),
        )
        ours, theirs = [], []
        for _ in range(args.repeats):
            model, opt = fresh_model(device)
            # Default arguments bind this round's model and optimiser (measured() calls at once anyway).
            ours.append(
                measured(
                    meter,
                    lambda model=model, opt=opt: train_epoch(
                        model, opt, tensors, 512, torch.Generator().manual_seed(1234)
                    ),
                )
            )
            model, opt = fresh_model(device)
            theirs.append(measured(meter, lambda model=model, opt=opt: loader_epoch(model, opt, loader, device)))
    (t_ours, j_ours), (t_theirs, j_theirs) = min(ours), min(theirs)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"one epoch of SimpleCNN (conv 2) on {len(tensors.y_train)} Fashion-MNIST images, batch 512, {name}; "
        f"energy {meter.source.value} ({meter.description})"
    )
    print(
        f"  device tensors + randperm : {t_ours:6.2f} s  {j_ours or 0:8.1f} J   "
        f"(one-time conversion to tensors: {setup:.2f} s)"
    )
    print(f"  DataLoader + transforms   : {t_theirs:6.2f} s  {j_theirs or 0:8.1f} J   (num_workers={args.workers})")
    print(
        f"  speed-up {t_theirs / t_ours:.2f}x (target >= 1.3x on CPU, >= 8x on GPU)"
        + (f", energy ratio {j_theirs / j_ours:.2f}x" if j_ours and j_theirs else "")
    )
    if args.workers and meter.source is energy.Source.estimated:
        print("  note: the CPU estimate counts this process only, so the DataLoader workers' energy is missing above")


if __name__ == "__main__":
    main()
