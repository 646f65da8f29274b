"""A trial's figures: what its `repeats` trainings (seeds seed, seed+1, ...) measured so far.

Accuracy is the mean of the repeats' final test accuracy; energy and time are summed over them
(the paper's RQ1 protocol: "each round's accuracy the mean over 8 repetitions"; docs/sweeps.md,
"The paper's studies").
The trial's record (greenai.trial.record) is their only writer.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from greenai.energy.idle import IdlePower
from greenai.energy.meters import Measurement, Source, combined_source
from greenai.training.loop import EpochResult


@dataclass
class TrialFigures:
    """Everything measured so far; complete when the trial ends, partial if it is stopped."""

    train_images: int
    idle: IdlePower | None = None
    accuracies: list[float] = field(default_factory=list)  # one per finished repeat
    # Each finished repeat's own energy (its model's set-up, epochs and records), where its
    # windows are its own: None for a fused member (equal shares of the group's windows) or a
    # packed trial (attributed after the batch).
    repeat_energies: list[float | None] = field(default_factory=list)
    epochs: list[EpochResult] = field(default_factory=list)  # all repeats, in order
    # The windows around its records between epochs (metrics written, the study told): part of
    # the trial's energy, so that a trial's figures cover its life from its first window to its last.
    records: list[Measurement] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return statistics.fmean(self.accuracies) if self.accuracies else float("nan")

    @property
    def energy_std(self) -> float | None:
        """The spread of the repeats' energies (population standard deviation, as accuracy_std's),
        where there are several and each was measured on its own."""
        known = [j for j in self.repeat_energies if j is not None]
        if len(known) < 2 or len(known) < len(self.repeat_energies):
            return None
        return statistics.pstdev(known)

    def _total(self, windows: list[Measurement], part: str) -> float | None:
        values = [getattr(m, part) for m in windows]
        known = [v for v in values if v is not None]
        return sum(known) if known else None

    @property
    def train_windows(self) -> list[Measurement]:
        return [e.train for e in self.epochs]

    @property
    def eval_windows(self) -> list[Measurement]:
        return [e.eval for e in self.epochs]

    @property
    def windows(self) -> list[Measurement]:
        return self.train_windows + self.eval_windows + self.records

    @property
    def approximate_windows(self) -> int:
        return sum(m.approximate for m in self.train_windows + self.eval_windows)

    @property
    def rederived_windows(self) -> int:
        return sum(m.rederived for m in self.windows)

    @property
    def source(self) -> Source:
        return combined_source([m.source for m in self.windows])

    @property
    def train_energy_j(self) -> float | None:
        return self._total(self.train_windows, "total_j")

    def metrics(self) -> dict[str, float | None]:
        """The run's final figures (energy ones are None when energy is off)."""
        train_j = self.train_energy_j
        eval_j = self._total(self.eval_windows, "total_j")
        # A trial's time is its share of each window: all of it, unless the window was shared
        # (fused, packed); the shares of a group's trials add up to the group's time.
        records_j = self._total(self.records, "total_j")
        train_s = self._total(self.train_windows, "charged")
        eval_s = self._total(self.eval_windows, "charged")
        records_s = self._total(self.records, "charged")
        samples = self.train_images * len(self.epochs)
        figures: dict[str, float | None] = {
            "accuracy": self.accuracy,
            "accuracy_std": statistics.pstdev(self.accuracies) if len(self.accuracies) > 1 else None,
            "energy_j_std": self.energy_std,
            "epochs_run": float(len(self.epochs)),
            "repeats_run": float(len(self.accuracies)),
            "train_seconds": train_s,
            "eval_seconds": eval_s,
            "trial_overhead_seconds": records_s,
            "busy_seconds": (train_s or 0.0) + (eval_s or 0.0) + (records_s or 0.0),
            "train_energy_j": train_j,
            "eval_energy_j": eval_j,
            "trial_overhead_energy_j": records_j,
            "energy_j": None if train_j is None else train_j + (eval_j or 0.0) + (records_j or 0.0),
            "gpu_energy_j": self._total(self.windows, "gpu_j"),
            "cpu_energy_j": self._total(self.windows, "cpu_j"),
            "energy_per_train_sample_j": None if train_j is None or not samples else train_j / samples,
        }
        figures.update(self._by_group_size())
        if self.idle is not None:
            figures.update(self._net(train_j, train_s, figures["energy_j"], figures["busy_seconds"]))
        return figures

    def _net(
        self, train_j: float | None, train_s: float | None, energy_j: float | None, busy_s: float | None
    ) -> dict[str, float | None]:
        """Net energy: gross minus the idle power (no CUDA context) over the trial's time. A net
        figure below zero (gross under the idle draw: a mismeasured idle power, or a window that
        read low) is kept as it is and flagged, never clamped."""
        assert self.idle is not None
        net = self.idle.net(energy_j, busy_s or 0.0)
        return {
            "idle_power_w": self.idle.watts,
            "context_power_w": self.idle.context_watts,
            "idle_settled": float(self.idle.settled),
            "train_net_energy_j": self.idle.net(train_j, train_s or 0.0),
            "net_energy_j": net,
            "net_energy_negative": None if net is None else float(net < 0),
        }

    def _by_group_size(self) -> dict[str, float | None]:
        """A fused trial's energy and epochs at each group size it trained in: a window's joules
        are shared equally among the members active in it, so a member's share grows as its
        group shrinks, for the same work."""
        sizes = sorted({e.train.shared_by for e in self.epochs if e.train.shared_by is not None}, reverse=True)
        figures: dict[str, float | None] = {}
        for size in sizes:
            epochs = [e for e in self.epochs if e.train.shared_by == size]
            figures[f"fused_epochs_size_{size}"] = float(len(epochs))
            figures[f"fused_energy_j_size_{size}"] = self._total(
                [w for e in epochs for w in (e.train, e.eval)], "total_j"
            )
        return figures


def epoch_metrics(result: EpochResult, idle: IdlePower | None = None) -> dict[str, float | None]:
    net = {} if idle is None else {"epoch_net_energy_j": idle.net(result.train.total_j, result.train.charged)}
    group = {} if result.train.shared_by is None else {"fused_group_size": float(result.train.shared_by)}
    return (
        net
        | group
        | {
            "train_loss": result.train_loss,
            "test_loss": result.test_loss,
            "test_accuracy": result.test_accuracy,
            "epoch_seconds": result.train.charged,
            "epoch_energy_j": result.train.total_j,
            "epoch_gpu_energy_j": result.train.gpu_j,
            "epoch_cpu_energy_j": result.train.cpu_j,
            "eval_seconds_epoch": result.eval.charged,
            "eval_energy_j_epoch": result.eval.total_j,
        }
    )
