"""The training loop: epochs of index-drawn batches, an evaluation after each, energy windows
around both, and a hook per epoch. It knows nothing of MLflow or Optuna."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from greenai.energy.meters import Measurement, Meter
from greenai.errors import GreenAIError
from greenai.training.data import DeviceData

EVAL_BATCH = 4096


class DivergedError(GreenAIError, RuntimeError):
    """The training loss became NaN or infinite: the trial fails with this one-line reason."""


@dataclass(frozen=True)
class Hyperparameters:
    lr: float
    beta1: float
    beta2: float
    eps: float
    weight_decay: float


@dataclass(frozen=True)
class EpochResult:
    epoch: int  # 1-based
    train_loss: float
    test_loss: float
    test_accuracy: float
    train: Measurement
    eval: Measurement


EpochHook = Callable[[EpochResult], None]


def make_optimizer(model: nn.Module, hp: Hyperparameters) -> torch.optim.Adam:
    """Adam with every tuned value applied (the original study lost beta2 on the way)."""
    return torch.optim.Adam(
        model.parameters(), lr=hp.lr, betas=(hp.beta1, hp.beta2), eps=hp.eps, weight_decay=hp.weight_decay
    )


def applied_hyperparameters(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """What the optimiser really holds, read back from it, for the run's params."""
    group = optimizer.param_groups[0]
    beta1, beta2 = group["betas"]
    return {
        "adam.lr": float(group["lr"]),
        "adam.beta1": float(beta1),
        "adam.beta2": float(beta2),
        "adam.eps": float(group["eps"]),
        "adam.weight_decay": float(group["weight_decay"]),
    }


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy on (x, y), in large no-grad batches."""
    model.eval()
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    with torch.no_grad():
        for start in range(0, len(y), EVAL_BATCH):
            xb, yb = x[start : start + EVAL_BATCH], y[start : start + EVAL_BATCH]
            logits = model(xb)
            loss_sum += nn.functional.cross_entropy(logits, yb, reduction="sum")
            correct += (logits.argmax(dim=1) == yb).sum()
    model.train()
    return loss_sum.item() / len(y), correct.item() / len(y)


def train_on(
    model: nn.Module, optimizer: torch.optim.Optimizer, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]
) -> float:
    """One optimiser step per batch; the mean loss, read once at the end (no per-batch sync)."""
    model.train()
    loss_sum, count = torch.zeros((), device=next(model.parameters()).device), 0
    for xb, yb in batches:
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(xb), yb)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach() * len(yb)
        count += len(yb)
    return loss_sum.item() / count


def train_epoch(
    model: nn.Module, optimizer: torch.optim.Optimizer, data: DeviceData, batch_size: int, generator: torch.Generator
) -> float:
    """One pass over the training split, in batches drawn by index."""
    return train_on(model, optimizer, data.train_batches(batch_size, generator))


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: DeviceData,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    meter: Meter,
    on_epoch: EpochHook,
) -> list[EpochResult]:
    """Train for `epochs`, measuring each epoch and each evaluation in its own energy window.

    `on_epoch` sees every epoch, a diverged one included (so its energy is logged); a hook may
    raise to stop training early (pruning). A NaN or infinite loss then raises DivergedError.
    """
    generator = torch.Generator().manual_seed(seed)
    results = []
    for epoch in range(1, epochs + 1):
        meter.begin("train")
        train_loss = train_epoch(model, optimizer, data, batch_size, generator)
        train_energy = meter.end("train")
        meter.begin("eval")
        test_loss, accuracy = evaluate(model, data.x_test, data.y_test)
        eval_energy = meter.end("eval")
        result = EpochResult(epoch, train_loss, test_loss, accuracy, train_energy, eval_energy)
        results.append(result)
        on_epoch(result)
        if not math.isfinite(train_loss):
            raise DivergedError(
                f"training loss became {train_loss} in epoch {epoch}: the run diverged (try a smaller lr)"
            )
    return results


def format_progress(label: str, result: EpochResult, epochs: int, step: int | None = None) -> str:
    """One line per epoch, readable among a multirun's interleaved logs; `step` counts epochs
    across a trial's repeats (the epoch itself by default)."""
    energy = result.train.total_j
    joules = f"{energy:8.1f} J {result.train.source.value}" if energy is not None else "energy off"
    return (
        f"[{label}] epoch {step or result.epoch:>3}/{epochs} loss {result.train_loss:.4f} "
        f"acc {result.test_accuracy:.4f} {joules} {result.train.seconds:6.2f} s"
    )
