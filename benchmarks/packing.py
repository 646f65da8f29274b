"""Benchmark: K trials at once on one GPU against the same trials one after another.

    python benchmarks/packing.py [--trials 8] [--epochs 10] [--ks 1,4,8]

The same 8 seeded trials (SimpleCNN conv 2, Fashion-MNIST, one grid point per seed) run with
Hydra's basic launcher (K=1: one warm process, one trial after another) and with
`hydra/launcher=packed sweep.trials_per_gpu=K`. This script measures the whole GPU (Zeus) over
each whole command, start-up included, the same way for every K; it prints that energy and the
wall time, energy per trial and its ratio to K=1, the sum of the trials' own (K=1) or
attributed (K>1) energies, and each trial's accuracy against K=1 (it must not change).
Target: at K=8, >= 2x less energy per trial than K=1. Needs a CUDA GPU with NVML energy
counters: on a CPU there is no whole-device energy to share out, and the script says so.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from _sweeps import run, study_trials, trial_runs


def sweep(work: Path, k: int, args: argparse.Namespace, gpu) -> dict:  # type: ignore[no-untyped-def]
    work.mkdir()
    seeds = ",".join(str(s) for s in range(1, args.trials + 1))
    launcher = [] if k == 1 else ["hydra/launcher=packed", f"sweep.trials_per_gpu={k}"]
    gpu.begin("sweep")
    seconds = run(
        work,
        "-m",
        "searcher=grid",
        f"seed=choice({seeds})",
        f"hydra.sweeper.n_trials={args.trials}",
        *launcher,
        f"epochs={args.epochs}",
        "energy=zeus",
        f"dataset.cache_dir={work.parent / 'cache'}",
    )
    whole = gpu.end("sweep").total_j
    runs = trial_runs(work)
    return {
        "seconds": seconds,
        "energy": whole,
        "trials_sum": sum(r.data.metrics["energy_j"] for r in runs),
        "accuracy": {int(t.params["seed"]): t.user_attrs["figures"]["accuracy"] for t in study_trials(work)},
        "source": sorted({r.data.tags["energy_source"] for r in runs}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--ks", default="1,4,8")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        sys.exit("packing.py needs a CUDA GPU with energy counters (NVML); none is visible here")
    from greenai.energy.meters import ZeusMeter

    gpu = ZeusMeter(gpu_index=0)
    ks = [int(k) for k in args.ks.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        results = {k: sweep(Path(tmp) / f"k{k}", k, args, gpu) for k in ks}
    base = results[ks[0]]
    print(
        f"{args.trials} trials x {args.epochs} epochs, SimpleCNN conv 2 on Fashion-MNIST, "
        f"{torch.cuda.get_device_name(0)}"
    )
    for k, r in results.items():
        per_trial = r["energy"] / args.trials
        drift = max(abs(r["accuracy"][s] - base["accuracy"][s]) for s in base["accuracy"])
        print(
            f"  K={k}: {r['seconds']:7.1f} s, whole GPU {r['energy']:9.1f} J, {per_trial:7.1f} J/trial, "
            f"trials' own sum {r['trials_sum']:9.1f} J ({'+'.join(r['source'])}), "
            f"energy ratio vs K={ks[0]} {base['energy'] / r['energy']:.2f}x, "
            f"time ratio {base['seconds'] / r['seconds']:.2f}x, "
            f"largest accuracy change {drift:.4f}"
        )


if __name__ == "__main__":
    main()
