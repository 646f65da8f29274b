"""Analysis as pure functions over plain numbers: no MLflow, no training code."""

from __future__ import annotations

from collections.abc import Sequence

from greenai.report.runs import TrialRow


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point dominates, maximising the first value (accuracy)
    and minimising the second (energy). Ties: identical points are all kept."""
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


def best_so_far(values: Sequence[float]) -> list[float]:
    """Running maximum, round by round."""
    running, best = [], float("-inf")
    for value in values:
        best = max(best, value)
        running.append(best)
    return running


def first_round_reaching(values: Sequence[float], target: float, tolerance: float = 0.0) -> int | None:
    """1-based round at which `values` first came within `tolerance` of `target`."""
    for round_number, value in enumerate(values, start=1):
        if value >= target - tolerance:
            return round_number
    return None


def sweep_summary(rows: Sequence[TrialRow], two_objectives: bool) -> dict[str, object]:
    """The figures a sweep's parent run holds, from its trials' rows (ordered by round)."""
    ordered = sorted(rows, key=lambda r: (r.round is None, r.round or 0))
    count = {state: sum(1 for r in ordered if r.state == state) for state in ("finished", "pruned", "failed", "killed")}
    done = [r for r in ordered if r.state == "finished" and r.accuracy is not None]
    energies = [r.energy_j for r in ordered if r.energy_j is not None]
    summary: dict[str, object] = {
        "trials": len(ordered),
        **{f"trials_{state}": n for state, n in count.items()},
        "energy_j": sum(energies) if energies else None,
        "seconds": sum(r.seconds for r in ordered if r.seconds is not None),
        "energy_sources": sorted({r.energy_source for r in ordered if r.energy_source}),
    }
    if done:
        accuracies = [r.accuracy for r in done]
        best = max(accuracies)
        first = next(r for r in done if r.accuracy == best)
        summary.update(best_accuracy=best, best_round=first.round, best_run_id=first.run_id)
    if two_objectives:
        measured = [r for r in done if r.energy_j is not None]
        front = pareto_front([(r.accuracy, r.energy_j) for r in measured])
        summary["pareto"] = [
            {"round": measured[i].round, "run_id": measured[i].run_id, "accuracy": measured[i].accuracy, "energy_j": measured[i].energy_j}
            for i in front
        ]
    return summary
