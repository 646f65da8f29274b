"""Benchmark 1: the same seeded TPE sweep with and without pruning, in one run.

    python benchmarks/pruning.py [--trials 24] [--epochs 12] [--train-size 6000]

Prints total energy of both sweeps, their ratio, and the difference in best accuracy.
Target: >= 40% less total energy, best accuracy within 0.5 points.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _sweeps import energy_source, run, study_trials


def sweep(work: Path, pruner: str, args: argparse.Namespace) -> dict:
    work.mkdir()
    seconds = run(
        work,
        "-m",
        "searcher=tpe",
        "space=paper3",
        f"pruner={pruner}",
        f"hydra.sweeper.n_trials={args.trials}",
        f"epochs={args.epochs}",
        f"dataset.train_size={args.train_size}",
        f"dataset.test_size={args.test_size}",
        f"dataset.cache_dir={work.parent / 'cache'}",
    )
    trials = study_trials(work)
    done = [t for t in trials if t.state.name == "COMPLETE"]
    return {
        "energy": sum(t.user_attrs.get("figures", {}).get("energy_j", 0.0) for t in trials),
        "best": max(t.value for t in done),
        "pruned": sum(t.state.name == "PRUNED" for t in trials),
        "epochs": int(sum(t.user_attrs.get("epochs_run", 0) for t in trials)),
        "seconds": seconds,
        "source": energy_source(work),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--train-size", type=int, default=6000)
    parser.add_argument("--test-size", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        full = sweep(Path(tmp) / "none", "none", args)
        pruned = sweep(Path(tmp) / "median", "median", args)
    print(
        f"TPE sweep, {args.trials} trials x {args.epochs} epochs, Fashion-MNIST {args.train_size}/{args.test_size}, "
        f"energy {full['source']}"
    )
    for name, r in (("no pruning", full), ("median pruner", pruned)):
        print(
            f"  {name:14s} energy {r['energy']:9.1f} J  epochs run {r['epochs']:4d}  pruned {r['pruned']:3d}  "
            f"best accuracy {r['best']:.4f}  wall {r['seconds']:6.1f} s"
        )
    saved = 1 - pruned["energy"] / full["energy"]
    print(
        f"energy ratio (pruned / full): {pruned['energy'] / full['energy']:.3f}  -> {saved * 100:.1f}% less energy "
        "(target >= 40%)"
    )
    print(
        f"best accuracy difference (pruned - full): {(pruned['best'] - full['best']) * 100:+.2f} points "
        "(target within 0.5)"
    )


if __name__ == "__main__":
    main()
