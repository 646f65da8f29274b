"""A sweep's totals as pure functions over its trial rows: which trials are scored, the Pareto
front, round order, and the figures a sweep's parent run holds. Used by the sweep's Hydra
callback (at the end of a sweep) and by the report; no MLflow, no training code."""

from __future__ import annotations

from collections.abc import Sequence

from greenai.stores.run_rows import TrialRow


def scored(rows: Sequence[TrialRow]) -> list[TrialRow]:
    """Finished trials with both an accuracy and an energy: those the accuracy-against-energy
    comparisons can place, in their given order."""
    return [r for r in rows if r.state == "finished" and r.accuracy is not None and r.energy_j is not None]


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point dominates, maximising the first value (accuracy)
    and minimising the second (energy), ordered by energy. Identical points are all kept."""
    front = []
    for i, (acc_i, energy_i) in enumerate(points):
        dominated = any(
            acc_j >= acc_i and energy_j <= energy_i and (acc_j > acc_i or energy_j < energy_i)
            for j, (acc_j, energy_j) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][1], -points[i][0]))


def by_round(rows: Sequence[TrialRow]) -> list[TrialRow]:
    """A sweep's trials in round order (rows without a round go last, in start order)."""
    return sorted(rows, key=lambda r: (r.round is None, r.round or 0))


def sweep_summary(rows: Sequence[TrialRow], two_objectives: bool) -> dict[str, object]:
    """The figures a sweep's parent run holds, from its trials' rows."""
    ordered = by_round(rows)
    count = {state: sum(1 for r in ordered if r.state == state) for state in ("finished", "pruned", "failed", "killed")}
    done = [r for r in ordered if r.state == "finished" and r.accuracy is not None]
    energies = [r.energy_j for r in ordered if r.energy_j is not None]
    net = [r.metrics["net_energy_j"] for r in ordered if "net_energy_j" in r.metrics]
    summary: dict[str, object] = {
        "trials": len(ordered),
        **{f"trials_{state}": n for state, n in count.items()},
        "energy_j": sum(energies) if energies else None,
        "net_energy_j": sum(net) if net else None,
        "seconds": sum(r.seconds for r in ordered if r.seconds is not None),
        "energy_sources": sorted({r.energy_source for r in ordered if r.energy_source}),
    }
    if done:
        best = max(r.accuracy for r in done)
        first = next(r for r in done if r.accuracy == best)
        summary.update(best_accuracy=best, best_round=first.round, best_run_id=first.run_id)
    if two_objectives:
        measured = scored(ordered)
        front = pareto_front([(r.accuracy, r.energy_j) for r in measured])
        summary["pareto"] = [
            {
                "round": measured[i].round,
                "run_id": measured[i].run_id,
                "accuracy": measured[i].accuracy,
                "energy_j": measured[i].energy_j,
            }
            for i in front
        ]
    return summary
