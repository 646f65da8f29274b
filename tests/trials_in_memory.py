"""Trials trained in this process on small in-memory data, with a stand-in for their records:
what the runners (greenai.trial.runner) do in an in-process launcher, without MLflow or Optuna."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from datasets_on_disk import class_images

from greenai.config import ModelName, TrainConfig
from greenai.energy.meters import Meter
from greenai.training import models
from greenai.training.data import DeviceData
from greenai.training.loop import EpochResult, Hyperparameters
from greenai.trial.figures import TrialFigures
from greenai.trial.runner import PreparedTrial

SIMPLECNN = models.ArchitectureSpec(ModelName.simplecnn, (1, 28, 28), conv_layers=1, linear_layers=2)


def memory_data(train: int = 120, test: int = 60) -> DeviceData:
    """Small class-band images, written straight into float32 tensors (no files)."""

    def split(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = np.arange(count) % 10
        images = torch.tensor(class_images(labels, (28, 28), seed), dtype=torch.float32).unsqueeze(1) / 255.0
        return (images - 0.3) / 0.35, torch.tensor(labels, dtype=torch.long)

    x_train, y_train = split(train, 1)
    x_test, y_test = split(test, 2)
    return DeviceData(x_train, y_train, x_test, y_test, "memory")


@dataclass
class Record:
    """What a runner writes a trial to (trial.record.TrialRecord's methods), kept in memory.
    `prune_at`: the trial's epoch count (all repeats) at which the pruner stops it."""

    figures: TrialFigures
    prune_at: int | None = None
    closed: list[Any] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    metrics: list[dict[str, float]] = field(default_factory=list)
    warmed: tuple[str, Any] | None = None  # what became of its warm-up, and its window
    job: SimpleNamespace = field(default_factory=lambda: SimpleNamespace(sweep_folder=None, parent_run_id=None))

    def optimizer(self, applied: Hyperparameters) -> None:
        pass

    def epoch(self, step: int, result: EpochResult) -> bool:
        self.figures.epochs.append(result)
        self.steps.append(step)
        return self.prune_at is not None and len(self.figures.epochs) >= self.prune_at

    def repeat_done(self, accuracy: float, energy_j: float | None = None) -> None:
        self.figures.accuracies.append(accuracy)
        self.figures.repeat_energies.append(energy_j)

    def records_done(self, windows) -> None:
        self.figures.records.extend(windows)

    def warmup(self, state: str, taken=None) -> None:
        self.warmed = (state, taken)

    def close(self, outcome: Any, totals: bool = True) -> None:
        self.closed.append(outcome)

    @property
    def run(self) -> SimpleNamespace:
        return SimpleNamespace(metrics=lambda values, step=None: self.metrics.append(dict(values)))


def trial(
    meter: Meter,
    data: DeviceData,
    *,
    seed: int = 1,
    epochs: int = 1,
    repeats: int = 1,
    prune_at: int | None = None,
    spec: models.ArchitectureSpec = SIMPLECNN,
    warmup_steps: int = 2,
) -> PreparedTrial:
    """A prepared trial of `spec` (SIMPLECNN) on `data`, measured by `meter`, its record in memory."""
    config = replace(TrainConfig(), epochs=epochs, repeats=repeats, seed=seed, batch_size=40, device="cpu")
    config.energy = replace(config.energy, warmup_steps=warmup_steps)
    setup = SimpleNamespace(
        config=config, spec=spec, dataset=data, meter=meter, device=torch.device("cpu"), name=f"trial-s{seed}"
    )
    figures = TrialFigures(train_images=len(data.y_train))
    return PreparedTrial(setup, Record(figures, prune_at))  # type: ignore[arg-type]
