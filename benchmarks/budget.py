"""Benchmark 2: a sweep with an energy budget ends within one trial's energy of it.

    python benchmarks/budget.py [--budget-kj 0.3] [--epochs 3] [--train-size 4000]

Prints the budget, the energy spent, the overshoot and the largest single trial's energy.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _sweeps import energy_source, run, study_trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-kj", type=float, default=0.3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-size", type=int, default=4000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        run(
            work,
            "-m",
            "searcher=random",
            "space=paper3",
            "hydra.sweeper.n_trials=500",
            f"sweep.energy_budget_kj={args.budget_kj}",
            f"epochs={args.epochs}",
            f"dataset.train_size={args.train_size}",
            "dataset.test_size=1000",
            f"dataset.cache_dir={work / 'cache'}",
        )
        trials = sorted(study_trials(work), key=lambda t: t.number)
        source = energy_source(work)
    energies = [t.user_attrs.get("figures", {}).get("energy_j", 0.0) for t in trials]
    budget, spent = args.budget_kj * 1000, sum(energies)
    print(
        f"random sweep with sweep.energy_budget_kj={args.budget_kj}, energy {source}: "
        f"{len(trials)} trials ran (500 allowed)"
    )
    print(f"  budget {budget:.1f} J, spent {spent:.1f} J, before the last trial {spent - energies[-1]:.1f} J")
    print(
        f"  overshoot {spent - budget:.1f} J = {(spent - budget) / max(energies):.2f} x the largest trial "
        f"({max(energies):.1f} J); "
        f"spent / budget = {spent / budget:.3f}"
    )
    within = spent - budget <= max(energies) and spent - energies[-1] < budget
    print(f"  ends within one trial's energy of the budget: {within}")


if __name__ == "__main__":
    main()
