"""Fused groups: every joule of the group's windows reaches exactly one trial, whatever the
pruner does to its members, and each trial shows the group sizes it trained in."""

from __future__ import annotations

import pytest
from trials_in_memory import memory_data, trial

from greenai.energy.meters import Measurement, Source
from greenai.trial.figures import epoch_metrics
from greenai.trial.outcome import Finished, PrunedAt
from greenai.trial.runner import run_alone, run_fused


class KnownWindows:
    """Each window reads a known energy: training 100 J of GPU over 2 s, evaluation 10 J over 1 s,
    the records between epochs 4 J over 0.2 s, a model's set-up 1 J over 0.1 s, a trial's close
    3 J over 0.3 s; every window of a trial's life it returned is kept (the close is not in it)."""

    source = Source.measured
    description = "known windows"
    components = "gpu"

    def __init__(self) -> None:
        self.windows: list[Measurement] = []

    def begin(self, name: str) -> None:
        pass

    def end(self, name: str) -> Measurement:
        reading = {
            "train": Measurement(2.0, 100.0, None, Source.measured),
            "eval": Measurement(1.0, 10.0, None, Source.measured),
            "records": Measurement(0.2, 4.0, None, Source.measured),
            "setup": Measurement(0.1, 1.0, None, Source.measured),
            "close": Measurement(0.3, 3.0, None, Source.measured),
        }[name]
        if name != "close":
            self.windows.append(reading)
        return reading

    def cancel(self, name: str) -> None:
        pass


def spent(record) -> float:
    """The trial's energy, as its run records it: training, evaluation and its records."""
    return record.figures.metrics()["energy_j"]


def test_a_trial_of_8_repeats_pruned_at_its_first_epoch_keeps_all_its_members_joules():
    meter, data = KnownWindows(), memory_data()
    pruned = trial(meter, data, seed=1, epochs=3, repeats=8, prune_at=1)
    survivor = trial(meter, data, seed=100, epochs=3, repeats=2)
    outcomes = run_fused([pruned, survivor])
    assert isinstance(outcomes[0], PrunedAt) and isinstance(outcomes[1], Finished)
    assert len(pruned.record.figures.epochs) == 8, "every member's first epoch is on the pruned trial's record"
    assert pruned.record.steps == [r * 3 + 1 for r in range(8)]
    # The set-up (1 J) and epoch 1 (114 J): 10 members share them; the pruned trial's 8 hold 8/10.
    assert spent(pruned.record) == pytest.approx(0.8 * 115.0)
    assert spent(survivor.record) == pytest.approx(0.2 * 115.0 + 2 * 114.0)
    total = sum(w.total_j for w in meter.windows)
    assert spent(pruned.record) + spent(survivor.record) == pytest.approx(total), "every joule reaches one trial"


def test_alone_in_its_group_the_pruned_trials_members_hold_the_whole_window():
    meter, data = KnownWindows(), memory_data()
    alone = trial(meter, data, seed=1, epochs=3, repeats=8, prune_at=1)
    assert isinstance(run_fused([alone])[0], PrunedAt)
    assert len(meter.windows) == 4, "set-up and one epoch: the group stopped when its only trial was pruned"
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


def test_a_trials_records_between_epochs_are_its_overhead_within_its_energy():
    meter, data = KnownWindows(), memory_data()
    alone = trial(meter, data, seed=1, epochs=2, repeats=2)
    assert isinstance(run_alone(alone), Finished)
    final = alone.record.figures.metrics()
    assert final["trial_overhead_energy_j"] == pytest.approx(4 * 4.0 + 2 * 1.0), "records, and each repeat's set-up"
    assert final["energy_j"] == pytest.approx(4 * (100.0 + 10.0 + 4.0) + 2 * 1.0), "training, evaluation, the rest"
    assert final["busy_seconds"] == pytest.approx(4 * (2.0 + 1.0 + 0.2) + 2 * 0.1)
    assert final["energy_j"] == pytest.approx(sum(w.total_j for w in meter.windows)), "its whole life"


def test_fused_members_share_the_groups_records_as_they_share_its_windows():
    meter, data = KnownWindows(), memory_data()
    group = [trial(meter, data, seed=1, epochs=2, repeats=3), trial(meter, data, seed=50, epochs=2)]
    run_fused(group)
    overhead = [t.record.figures.metrics()["trial_overhead_energy_j"] for t in group]
    assert overhead == [pytest.approx(3 / 4 * (2 * 4.0 + 1.0)), pytest.approx(1 / 4 * (2 * 4.0 + 1.0))]
