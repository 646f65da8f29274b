"""Fused groups: every joule of the group's windows reaches exactly one trial, whatever the
pruner does to its members, and each trial shows the group sizes it trained in."""

from __future__ import annotations

import pytest
from trials_in_memory import memory_data, trial

from greenai.energy.meters import Measurement, Source
from greenai.trial.figures import epoch_metrics
from greenai.trial.outcome import Finished, PrunedAt
from greenai.trial.runner import run_fused


class KnownWindows:
    """Each window reads a known energy: training 100 J of GPU over 2 s, evaluation 10 J over 1 s;
    every window it returned is kept."""

    source = Source.measured
    description = "known windows"
    components = "gpu"

    def __init__(self) -> None:
        self.windows: list[Measurement] = []

    def begin(self, name: str) -> None:
        pass

    def end(self, name: str) -> Measurement:
        reading = (
            Measurement(2.0, 100.0, None, Source.measured)
            if name == "train"
            else Measurement(1.0, 10.0, None, Source.measured)
        )
        self.windows.append(reading)
        return reading

    def cancel(self, name: str) -> None:
        pass


def spent(record) -> float:
    return sum(e.train.total_j + e.eval.total_j for e in record.figures.epochs)


def test_a_trial_of_8_repeats_pruned_at_its_first_epoch_keeps_all_its_members_joules():
    meter, data = KnownWindows(), memory_data()
    pruned = trial(meter, data, seed=1, epochs=3, repeats=8, prune_at=1)
    survivor = trial(meter, data, seed=100, epochs=3, repeats=2)
    outcomes = run_fused([pruned, survivor])
    assert isinstance(outcomes[0], PrunedAt) and isinstance(outcomes[1], Finished)
    assert len(pruned.record.figures.epochs) == 8, "every member's first epoch is on the pruned trial's record"
    assert pruned.record.steps == [r * 3 + 1 for r in range(8)]
    # Epoch 1: 10 members share 110 J; the pruned trial's 8 members hold 8/10 of it.
    assert spent(pruned.record) == pytest.approx(0.8 * 110.0)
    assert spent(survivor.record) == pytest.approx(0.2 * 110.0 + 2 * 110.0)
    total = sum(w.total_j for w in meter.windows)
    assert spent(pruned.record) + spent(survivor.record) == pytest.approx(total), "every joule reaches one trial"


def test_alone_in_its_group_the_pruned_trials_members_hold_the_whole_window():
    meter, data = KnownWindows(), memory_data()
    alone = trial(meter, data, seed=1, epochs=3, repeats=8, prune_at=1)
    assert isinstance(run_fused([alone])[0], PrunedAt)
    assert len(meter.windows) == 2, "the group stopped when its only trial was pruned"
    assert spent(alone.record) == pytest.approx(sum(w.total_j for w in meter.windows))


def test_each_epoch_logs_the_group_size_it_was_shared_by_and_the_run_its_energy_per_size():
    meter, data = KnownWindows(), memory_data()
    pruned = trial(meter, data, seed=1, epochs=3, repeats=3, prune_at=3)
    survivor = trial(meter, data, seed=100, epochs=3, repeats=1)
    run_fused([pruned, survivor])
    sizes = [epoch_metrics(e)["fused_group_size"] for e in survivor.record.figures.epochs]
    assert sizes == [4.0, 1.0, 1.0], "the survivor trained with 4 members, then alone"
    final = survivor.record.figures.metrics()
    assert final["fused_energy_j_size_4"] == pytest.approx(110.0 / 4)
    assert final["fused_epochs_size_4"] == 1.0
    assert final["fused_energy_j_size_1"] == pytest.approx(2 * 110.0) and final["fused_epochs_size_1"] == 2.0
    assert "fused_energy_j_size_4" in pruned.record.figures.metrics()
