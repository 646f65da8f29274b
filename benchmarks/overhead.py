"""Benchmark: what Hydra, MLflow, Optuna and the energy meter add to each trial.

    python benchmarks/overhead.py [--small 2] [--large 10] [--train-size 2000]
    python benchmarks/overhead.py --fused [--small 8] [--large 32] [--train-size 500] [--epochs 2]

Unfused: a plain multirun of N one-epoch trials (`python -m greenai.train -m seed=1,...,N`)
against the same N trainings in a bare loop. Fused: an Optuna sweep of N trials asked and
launched as one batch (`searcher=random hydra/launcher=fused hydra.sweeper.n_jobs=N fuse=true`:
composition, N MLflow runs with params and per-epoch metrics, Optuna ask and tell) against the
same N members trained as one group with `fusion.fit_group` and nothing else. Each side runs in a
fresh process for two values of N; the per-trial overhead is the difference of the two slopes,
so start-up costs paid once (imports, creating the stores) do not blur it; they are printed
apart. Targets: unfused under 0.5 s per trial; fused, in a batch of 32, at most 0.1 s per trial.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _sweeps import fashion_mnist, run


def bare_loop(trials: int, train_size: int, cache: str) -> None:
    """N trainings with greenai's data and loop, and nothing else (no Hydra, MLflow, meter)."""
    import torch

    from greenai.config import ModelName
    from greenai.energy.meters import OffMeter
    from greenai.training import data, models
    from greenai.training.loop import Hyperparameters, fit, make_optimizer

    cfg = fashion_mnist(cache, train_size=train_size, test_size=1000)
    tensors = data.load(cfg, torch.device("cpu"))
    for seed in range(1, trials + 1):
        torch.manual_seed(seed)
        model = models.build(models.ArchitectureSpec(ModelName.simplecnn, (1, 28, 28), 2, 3))
        opt = make_optimizer(model, Hyperparameters(1e-3, 0.9, 0.999, 1e-8, 0.0))
        fit(model, opt, tensors, epochs=1, batch_size=512, seed=seed, meter=OffMeter())


def bare_group(trials: int, train_size: int, cache: str, epochs: int) -> None:
    """N members trained as one fused group, and nothing else (no Hydra, MLflow, Optuna, meter)."""
    import torch

    from greenai.config import ModelName
    from greenai.energy.meters import OffMeter
    from greenai.training import data, fusion, models
    from greenai.training.loop import Hyperparameters

    cfg = fashion_mnist(cache, train_size=train_size, test_size=1000)
    tensors = data.load(cfg, torch.device("cpu"))
    spec = models.ArchitectureSpec(ModelName.simplecnn, (1, 28, 28), 2, 3)
    lrs = [10 ** (-4 + 3 * i / trials) for i in range(trials)]
    members = [fusion.Member(1234, Hyperparameters(lr, 0.9, 0.999, 1e-8, 0.0)) for lr in lrs]
    fusion.fit_group(fusion.FusedGroup(spec, members), tensors, epochs=epochs, batch_size=512, meter=OffMeter())


def timed_bare(trials: int, args: argparse.Namespace, cache: Path) -> float:
    start = time.perf_counter()
    mode = ["--fused", "--epochs", str(args.epochs)] if args.fused else []
    subprocess.run(
        [
            sys.executable,
            __file__,
            "--bare",
            str(trials),
            "--train-size",
            str(args.train_size),
            "--cache",
            str(cache),
            *mode,
        ],
        check=True,
    )
    return time.perf_counter() - start


def timed_multirun(trials: int, args: argparse.Namespace, work: Path) -> float:
    work.mkdir()
    data = [
        f"dataset.train_size={args.train_size}",
        "dataset.test_size=1000",
        f"dataset.cache_dir={work.parent / 'cache'}",
    ]
    if args.fused:
        return run(
            work,
            "-m",
            "searcher=random",
            "space=paper3",
            "hydra/launcher=fused",
            "fuse=true",
            f"hydra.sweeper.n_trials={trials}",
            f"hydra.sweeper.n_jobs={trials}",
            f"epochs={args.epochs}",
            *data,
        )
    seeds = ",".join(str(s) for s in range(1, trials + 1))
    return run(work, "-m", f"seed={seeds}", "epochs=1", *data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=2)
    parser.add_argument("--large", type=int, default=10)
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument(
        "--fused", action="store_true", help="an Optuna batch through hydra/launcher=fused vs fit_group"
    )
    parser.add_argument("--epochs", type=int, default=2, help="epochs per trial with --fused")
    parser.add_argument("--bare", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        if args.fused:
            bare_group(args.bare, args.train_size, args.cache, args.epochs)
        else:
            bare_loop(args.bare, args.train_size, args.cache)
        return
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        timed_bare(1, args, cache)  # warm the dataset cache (decompressed files) for both sides
        bare = {n: timed_bare(n, args, cache) for n in (args.small, args.large)}
        multi = {n: timed_multirun(n, args, Path(tmp) / f"multirun-{n}") for n in (args.small, args.large)}
    span = args.large - args.small
    per_bare, per_multi = (bare[args.large] - bare[args.small]) / span, (multi[args.large] - multi[args.small]) / span
    kind = f"{args.epochs}-epoch trials as one fused Optuna batch" if args.fused else "one-epoch trials"
    target = "at most 0.1 s in a fused batch of 32" if args.fused else "< 0.5 s"
    print(f"SimpleCNN {kind} on {args.train_size} Fashion-MNIST images, CPU; wall time of whole processes")
    for n in (args.small, args.large):
        print(f"  N={n:3d}: bare {'group' if args.fused else 'loop'} {bare[n]:6.2f} s   greenai {multi[n]:6.2f} s")
    print(
        f"  per trial: bare {per_bare:.3f} s, greenai {per_multi:.3f} s -> overhead {per_multi - per_bare:.3f} s "
        f"per trial (target {target})"
    )
    fixed = (multi[args.small] - per_multi * args.small) - (bare[args.small] - per_bare * args.small)
    print(f"  paid once per command: {fixed:.2f} s more than the bare loop (Hydra, MLflow store, Optuna/Zeus imports)")
    print(f"  ratio of per-trial times (greenai / bare): {per_multi / per_bare:.2f}")


if __name__ == "__main__":
    main()
