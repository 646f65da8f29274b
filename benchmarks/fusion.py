"""Benchmark (issue 12): K trials trained as one fused group against the same K trials one after another.

    python benchmarks/fusion.py [--ks 1,8,32,64] [--epochs 5] [--train-size N] [--test-size N]
                                [--device auto] [--root DIR] [--energy auto]

SimpleCNN (conv 2, linear 3) on Fashion-MNIST, batch 512, Adam with the paper's betas; the members
differ in seed and learning rate (log-spaced in [1e-4, 3e-3]). Both ways run in this one warm
process after a warm-up, with the same meter (`energy.make_meter(EnergyConfig(), device)`: Zeus
where it has counters, else greenai's labelled CPU estimate). The sequential baseline is the
unfused path of a trial (seed, models.build, loop.make_optimizer, loop.fit); it trains the
largest K's members once, and each smaller K reuses its first K trials (the same members).
Prints per K: seconds and joules per trial both ways, the ratios (sequential / fused), and the
largest |accuracy difference| of any fused member against its alone-trained twin.
Target (issue 12, one H100): at K=32, >= 5x less energy and time per trial. On a CPU fusion may
not pay; the ratio is printed as measured.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass, replace

import numpy as np
import torch
from _sweeps import fashion_mnist

from greenai.config import EnergyBackend, EnergyConfig, ModelName
from greenai.energy import meters as energy
from greenai.training import data, devices, fusion, models
from greenai.training.loop import Hyperparameters, fit, make_optimizer

SPEC = models.ArchitectureSpec(ModelName.simplecnn, (1, 28, 28), conv_layers=2, linear_layers=3)
BATCH = 512
LR_RANGE = (1e-4, 3e-3)


@dataclass
class Spent:
    """What some trials cost: wall seconds, joules (None with energy off), final accuracies."""

    seconds: float
    joules: float | None
    accuracies: list[float]


def window_joules(results) -> float | None:  # type: ignore[no-untyped-def]
    values = [m.total_j for r in results for m in (r.train, r.eval)]
    return None if None in values else sum(values)


def members(k: int, first_seed: int = 1234) -> list[fusion.Member]:
    lrs = np.geomspace(*LR_RANGE, num=k)
    return [
        fusion.Member(first_seed + i, Hyperparameters(float(lr), 0.9, 0.999, 1e-8, 0.0)) for i, lr in enumerate(lrs)
    ]


def alone(member: fusion.Member, tensors: data.DeviceData, epochs: int, meter: energy.Meter) -> Spent:
    start = time.perf_counter()
    net = fusion.alone_model(SPEC, member.seed).to(tensors.x_train.device)
    optimizer = make_optimizer(net, member.hyperparameters)
    results = fit(net, optimizer, tensors, epochs=epochs, batch_size=BATCH, seed=member.seed, meter=meter).epochs
    return Spent(time.perf_counter() - start, window_joules(results), [results[-1].test_accuracy])


def fused(group_members: list[fusion.Member], tensors: data.DeviceData, epochs: int, meter: energy.Meter) -> Spent:
    start = time.perf_counter()
    group = fusion.FusedGroup(SPEC, group_members, tensors.x_train.device)
    runs = fusion.fit_group(group, tensors, epochs=epochs, batch_size=BATCH, meter=meter)
    results = [r for run in runs for r in run.epochs]
    return Spent(time.perf_counter() - start, window_joules(results), [run.epochs[-1].test_accuracy for run in runs])


def warm_up(tensors: data.DeviceData, meter: energy.Meter) -> None:
    """One short epoch each way first, so neither side pays the process's first-call costs."""
    few = replace(tensors, x_train=tensors.x_train[: 4 * BATCH], y_train=tensors.y_train[: 4 * BATCH])
    alone(members(1)[0], few, 1, meter)
    for k in (1, 2):  # one member takes other kernels (an ungrouped convolution) than several
        fused(members(k), few, 1, meter)


def per_trial(value: float | None, trials: int, label: str, unit: str) -> str:
    return "n/a" if value is None else f"{value / trials:.3g} {unit}/trial{label}"


def ratio(sequential: float | None, group: float | None) -> str:
    return "n/a" if not sequential or not group else f"{sequential / group:.2f}x"


def row(k: int, group: Spent, sequential: list[Spent], label: str) -> str:
    seq_seconds = sum(s.seconds for s in sequential)
    joules = [s.joules for s in sequential]
    seq_joules = None if None in joules else sum(joules)  # type: ignore[arg-type]
    drift = max(abs(a - s.accuracies[0]) for a, s in zip(group.accuracies, sequential, strict=True))
    return (
        f"K={k:<3} fused {per_trial(group.seconds, k, '', 's')}, {per_trial(group.joules, k, label, 'J')} | "
        f"sequential {per_trial(seq_seconds, k, '', 's')}, {per_trial(seq_joules, k, label, 'J')} | "
        f"ratio (sequential/fused) time {ratio(seq_seconds, group.seconds)}, "
        f"energy {ratio(seq_joules, group.joules)} | "
        f"largest accuracy difference vs alone {drift:.4f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", default="1,8,32,64", help="group sizes, comma-separated")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--train-size", type=int, default=None, help="class-balanced subset (default: all 60,000)")
    parser.add_argument("--test-size", type=int, default=None, help="class-balanced subset (default: all 10,000)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if visible), cpu, cuda, cuda:N")
    parser.add_argument("--root", default=None, help="a folder with Fashion-MNIST (default: the usual search)")
    parser.add_argument("--energy", default="auto", choices=[b.value for b in EnergyBackend], help="energy backend")
    args = parser.parse_args()
    ks = sorted({int(k) for k in args.ks.split(",")})
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else "cpu"
        if args.device == "auto"
        else args.device
    )
    devices.set_deterministic(False)  # as greenai's training runs by default
    meter = energy.make_meter(EnergyConfig(backend=EnergyBackend(args.energy)), device)
    label = f" {meter.source.value}"
    with tempfile.TemporaryDirectory() as cache:
        cfg = fashion_mnist(cache, root=args.root, train_size=args.train_size, test_size=args.test_size)
        tensors = data.load(cfg, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"{SPEC.name}, {len(tensors.y_train)} train / {len(tensors.y_test)} test images ({tensors.source}), "
        f"{args.epochs} epochs, batch {BATCH}, {name}; energy {meter.source.value} ({meter.description})"
    )
    warm_up(tensors, meter)
    everyone = members(max(ks))
    sequential = [alone(member, tensors, args.epochs, meter) for member in everyone]
    print(
        f"sequential baseline: the {len(everyone)} trials of K={max(ks)} trained once, one after another "
        f"(loop.fit each); each smaller K reuses its first K trials"
    )
    for k in ks:
        print(row(k, fused(everyone[:k], tensors, args.epochs, meter), sequential[:k], label), flush=True)


if __name__ == "__main__":
    main()
