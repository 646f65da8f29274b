"""The training loop: epochs of index-drawn batches, an evaluation after each, energy windows
around both, and a hook per epoch. It knows nothing of MLflow or Optuna.

`fit` here and `fusion.fit_group` share one contract: the epoch hook sees each training's result
by member id and returns the members to stop (pruning); each training ends `finished`,
`stopped` or `diverged` (a NaN or infinite loss, with `DivergedError`'s one line), recorded in a
`TrainingRun`. Neither raises to stop.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum

import torch
from torch import nn

from greenai.energy.meters import Measurement, Meter, window
from greenai.errors import GreenAIError
from greenai.training.augment import Augmentation
from greenai.training.inputs import TrainingData

# The optimiser's side lives in training.optim; these names are the loop's API too.
from greenai.training.optim import (  # noqa: F401
    Hyperparameters,
    Schedule,
    applied_hyperparameters,
    make_optimizer,
)
from greenai.training.precision import Amp

EVAL_BATCH = 4096


class DivergedError(GreenAIError, RuntimeError):
    """The training loss became NaN or infinite: the trial fails with this one-line reason."""


@dataclass(frozen=True)
class EpochResult:
    epoch: int  # 1-based
    train_loss: float
    test_loss: float
    test_accuracy: float
    train: Measurement
    eval: Measurement


class RunState(str, Enum):
    finished = "finished"  # trained every epoch
    stopped = "stopped"  # the epoch hook stopped it (pruning)
    diverged = "diverged"  # its training loss became NaN or infinite


@dataclass
class TrainingRun:
    """One training's record: every epoch it trained, how it ended, and the error if it diverged."""

    member: int = 0
    epochs: list[EpochResult] = field(default_factory=list)
    state: RunState | None = None  # None while it trains
    error: DivergedError | None = None
    # Each epoch's window around the epoch hook (its records: metrics, the study told): the
    # trial's own overhead, part of its energy. A fused member holds its share of the group's.
    records: list[Measurement] = field(default_factory=list)

    def after_epoch(self, result: EpochResult, stop: bool) -> bool:
        """Record the epoch; whether the training ends with it. A hook's stop wins over divergence
        in the same epoch (the trial is then pruned, not failed)."""
        self.epochs.append(result)
        if stop:
            self.state = RunState.stopped
        elif not math.isfinite(result.train_loss):
            self.state = RunState.diverged
            self.error = DivergedError(
                f"training loss became {result.train_loss} in epoch {result.epoch}: the run diverged (try a smaller lr)"
            )
        return self.state is not None


# Sees every active training's result for the epoch (by member id: 0 for `fit`) and returns the
# members to stop, or None.
EpochHook = Callable[[Mapping[int, EpochResult]], Iterable[int] | None]


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy on (x, y), in large no-grad batches."""
    batches = ((x[start : start + EVAL_BATCH], y[start : start + EVAL_BATCH]) for start in range(0, len(y), EVAL_BATCH))
    return evaluate_batches(model, batches, x.device)


def evaluate_batches(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    amp: Amp | None = None,
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over `batches`, without gradients, in the training's
    precision (`amp`); read once at the end."""
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    count = 0
    with torch.no_grad():
        for xb, yb in batches:
            with amp.autocast() if amp else contextlib.nullcontext():
                logits = model(xb)
                loss_sum += nn.functional.cross_entropy(logits, yb, reduction="sum").float()
            correct += (logits.argmax(dim=1) == yb).sum()
            count += len(yb)
    model.train()
    return loss_sum.item() / count, correct.item() / count


def train_on(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    amp: Amp | None = None,
    schedule: Schedule | None = None,
) -> float:
    """One optimiser step per batch (forward pass and loss under `amp`'s autocast, the schedule
    stepped after each where it is per batch); the mean loss, read once at the end (no per-batch
    sync)."""
    model.train()
    loss_sum, count = torch.zeros((), device=next(model.parameters()).device), 0
    for xb, yb in batches:
        optimizer.zero_grad(set_to_none=True)
        with amp.autocast() if amp else contextlib.nullcontext():
            loss = nn.functional.cross_entropy(model(xb), yb)
        if amp:
            amp.backward_step(loss, optimizer)
        else:
            loss.backward()
            optimizer.step()
        if schedule:
            schedule.after_batch()
        loss_sum += loss.detach().float() * len(yb)
        count += len(yb)
    return loss_sum.item() / count


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: TrainingData,
    batch_size: int,
    generator: torch.Generator,
    augment: Augmentation | None = None,
    amp: Amp | None = None,
    schedule: Schedule | None = None,
) -> float:
    """One pass over the training split, in batches drawn by index (augmented on the device)."""
    batches = data.train_batches(batch_size, generator)
    if augment is not None:
        batches = ((augment(xb), yb) for xb, yb in batches)
    return train_on(model, optimizer, batches, amp, schedule)


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: TrainingData,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    meter: Meter,
    on_epoch: EpochHook | None = None,
    augment: Augmentation | None = None,
    amp: Amp | None = None,
    schedule: Schedule | None = None,
) -> TrainingRun:
    """Train for `epochs`, measuring each epoch, each evaluation and each call of the epoch hook
    (the trial's records between epochs) in its own energy window.

    `on_epoch` sees every epoch, a diverged one included (so its energy is logged), as {0: result};
    returning [0] stops the training (pruning). A NaN or infinite loss ends it as diverged.
    `augment` changes each training batch on the device (training.augment); `amp` is the
    precision (training.precision); `schedule` the learning-rate schedule (training.optim)."""
    generator = torch.Generator().manual_seed(seed)
    run = TrainingRun()
    for epoch in range(1, epochs + 1):
        with window(meter, "train") as train:
            train_loss = train_epoch(model, optimizer, data, batch_size, generator, augment, amp, schedule)
            if schedule:
                schedule.after_epoch()
        with window(meter, "eval") as evaluation:
            test_loss, accuracy = evaluate_batches(model, data.test_batches(EVAL_BATCH), data.device, amp)
        result = EpochResult(epoch, train_loss, test_loss, accuracy, train.taken, evaluation.taken)
        with window(meter, "records") as records:
            stop = 0 in set((on_epoch({0: result}) if on_epoch else None) or ())
        run.records.append(records.taken)
        if run.after_epoch(result, stop):
            return run
    run.state = RunState.finished
    return run


def format_progress(label: str, result: EpochResult, epochs: int, step: int | None = None, note: str = "") -> str:
    """One line per epoch, readable among a multirun's interleaved logs; `step` counts epochs
    across a trial's repeats (the epoch itself by default); `note` ends it (data streamed)."""
    energy = result.train.total_j
    joules = f"{energy:8.1f} J {result.train.source.value}" if energy is not None else "energy off"
    return (
        f"[{label}] epoch {step or result.epoch:>3}/{epochs} loss {result.train_loss:.4f} "
        f"acc {result.test_accuracy:.4f} {joules} {result.train.seconds:6.2f} s{note}"
    )
