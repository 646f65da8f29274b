"""A sweep's totals from its trial rows: what the sweep's parent run holds."""

from __future__ import annotations

import pytest

from greenai.stores.run_rows import TrialRow
from greenai.sweep.totals import by_round, pareto_front, scored, sweep_summary


def row(round_, acc, energy, state="finished", source="measured", metrics=None):
    return TrialRow(
        f"id{round_}", f"run{round_}", round_, state, "FINISHED", acc, energy, 2.0, source, metrics=metrics or {}
    )


def test_pareto_front_keeps_only_non_dominated_points():
    points = [(0.9, 100), (0.8, 50), (0.85, 120), (0.8, 60), (0.7, 40), (0.9, 100)]
    assert pareto_front(points) == [4, 1, 0, 5]


def test_scored_keeps_finished_trials_with_accuracy_and_energy_in_order():
    rows = [row(3, 0.8, 10), row(1, None, 5), row(2, 0.7, None), row(4, 0.9, 9, "pruned"), row(5, 0.6, 8)]
    assert [r.round for r in scored(rows)] == [3, 5]


def test_by_round_puts_rows_without_a_round_last_in_their_order():
    rows = [row(None, 0.1, 1), row(2, 0.2, 1), row(None, 0.3, 1), row(1, 0.4, 1)]
    assert [(r.round, r.accuracy) for r in by_round(rows)] == [(1, 0.4), (2, 0.2), (None, 0.1), (None, 0.3)]


def test_summary_counts_states_and_totals_every_trials_energy():
    rows = [
        row(2, 0.8, 10, metrics={"net_energy_j": 6.0}),
        row(1, 0.8, 20, metrics={"net_energy_j": 12.0}),
        row(3, None, 7, "failed"),
        row(4, 0.5, 3, "pruned"),
        row(5, None, None, "killed", source=None),
    ]
    summary = sweep_summary(rows, two_objectives=False)
    assert (summary["trials"], summary["trials_finished"], summary["trials_pruned"]) == (5, 2, 1)
    assert (summary["trials_failed"], summary["trials_killed"]) == (1, 1)
    assert summary["energy_j"] == 40 and summary["net_energy_j"] == 18.0 and summary["seconds"] == 10.0
    assert summary["energy_sources"] == ["measured"]
    # the best accuracy is first reached in round 1 (rows are taken in round order, not given order)
    assert (summary["best_accuracy"], summary["best_round"], summary["best_run_id"]) == (0.8, 1, "id1")
    assert "pareto" not in summary


def test_summary_of_two_objectives_lists_the_pareto_trials_by_energy():
    rows = [row(1, 0.9, 100), row(2, 0.8, 50), row(3, 0.85, 120), row(4, 0.95, 300, "pruned")]
    pareto = sweep_summary(rows, two_objectives=True)["pareto"]
    assert [(p["round"], p["run_id"], p["energy_j"]) for p in pareto] == [(2, "id2", 50), (1, "id1", 100)]


def test_summary_without_energy_says_none_rather_than_zero():
    summary = sweep_summary([row(1, 0.8, None, source=None)], two_objectives=False)
    assert summary["energy_j"] is None and summary["net_energy_j"] is None
    assert summary["best_accuracy"] == pytest.approx(0.8)
