"""The optimiser and learning-rate schedule a training uses: made from the config, and read back
from the live objects, so that what the run records is what trained (the original study lost
beta2 on the way to Adam).

`optimizer=adam` (the paper's), `adamw` (decoupled weight decay) or `sgd` (momentum, Nesterov):
lr, beta1, beta2, eps and weight_decay stay top-level keys, where the paper's spaces sweep them.
`scheduler=none|cosine|onecycle` schedules the top-level lr (onecycle: as its peak).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Union

import torch
from torch import nn

from greenai.config import OptimizerName, SchedulerConfig, SchedulerName, TrainConfig


@dataclass(frozen=True)
class Hyperparameters:
    """Adam's values (the paper's optimiser; the only one fusion trains)."""

    lr: float
    beta1: float
    beta2: float
    eps: float
    weight_decay: float
    PREFIX: ClassVar[str] = "adam"

    def params(self) -> dict[str, object]:
        """The run's params for values read back from a live optimiser (`adam.lr`, ...)."""
        return {f"{self.PREFIX}.{name}": float(value) for name, value in vars(self).items()}


@dataclass(frozen=True)
class AdamWHyperparameters(Hyperparameters):
    """AdamW's values: Adam's, with the weight decay applied to the weights, not the gradient."""

    PREFIX: ClassVar[str] = "adamw"


@dataclass(frozen=True)
class SGDHyperparameters:
    lr: float
    momentum: float
    nesterov: bool
    weight_decay: float
    dampening: float = 0.0

    def params(self) -> dict[str, object]:
        return {f"sgd.{name}": value if isinstance(value, bool) else float(value) for name, value in vars(self).items()}


OptimizerSettings = Union[Hyperparameters, AdamWHyperparameters, SGDHyperparameters]  # noqa: UP007 (runtime alias)


def settings_from(cfg: TrainConfig) -> OptimizerSettings:
    """The optimiser's values as the config gives them."""
    name = cfg.optimizer.name
    if name is OptimizerName.sgd:
        return SGDHyperparameters(cfg.lr, cfg.optimizer.momentum, cfg.optimizer.nesterov, cfg.weight_decay)
    adam_like = AdamWHyperparameters if name is OptimizerName.adamw else Hyperparameters
    return adam_like(cfg.lr, cfg.beta1, cfg.beta2, cfg.eps, cfg.weight_decay)


def make_optimizer(model: nn.Module, hp: OptimizerSettings) -> torch.optim.Optimizer:
    """The optimiser with every tuned value applied."""
    if isinstance(hp, SGDHyperparameters):
        return torch.optim.SGD(
            model.parameters(),
            lr=hp.lr,
            momentum=hp.momentum,
            nesterov=hp.nesterov,
            weight_decay=hp.weight_decay,
            dampening=hp.dampening,
        )
    kind = torch.optim.AdamW if isinstance(hp, AdamWHyperparameters) else torch.optim.Adam
    return kind(model.parameters(), lr=hp.lr, betas=(hp.beta1, hp.beta2), eps=hp.eps, weight_decay=hp.weight_decay)


def applied_hyperparameters(optimizer: torch.optim.Optimizer) -> OptimizerSettings:
    """What the optimiser really holds, read back from it (the run's params show what reached it)."""
    group = optimizer.param_groups[0]
    if isinstance(optimizer, torch.optim.SGD):
        return SGDHyperparameters(
            group["lr"], group["momentum"], group["nesterov"], group["weight_decay"], group["dampening"]
        )
    beta1, beta2 = group["betas"]
    # AdamW is a subclass of Adam in recent torch: asked first.
    kind = AdamWHyperparameters if isinstance(optimizer, torch.optim.AdamW) else Hyperparameters
    return kind(group["lr"], beta1, beta2, group["eps"], group["weight_decay"])


# ---------------------------------------------------------------- learning-rate schedules


class Schedule:
    """A learning-rate schedule, stepped where it must be: once per epoch (cosine) or once per
    batch (onecycle). `Schedule()` is the constant learning rate."""

    def __init__(self, scheduler: torch.optim.lr_scheduler.LRScheduler | None = None, per_batch: bool = False) -> None:
        self.scheduler, self.per_batch = scheduler, per_batch

    def after_batch(self) -> None:
        if self.scheduler is not None and self.per_batch:
            self.scheduler.step()

    def after_epoch(self) -> None:
        if self.scheduler is not None and not self.per_batch:
            self.scheduler.step()

    def params(self) -> dict[str, object]:
        """The schedule as the live scheduler holds it, for the run's params."""
        s = self.scheduler
        if isinstance(s, torch.optim.lr_scheduler.CosineAnnealingLR):
            return {"cosine.T_max": s.T_max, "cosine.eta_min": float(s.eta_min), "cosine.stepped": "per epoch"}
        if isinstance(s, torch.optim.lr_scheduler.OneCycleLR):
            group = s.optimizer.param_groups[0]
            return {
                "onecycle.max_lr": float(group["max_lr"]),
                "onecycle.initial_lr": float(group["initial_lr"]),
                "onecycle.min_lr": float(group["min_lr"]),
                "onecycle.total_steps": s.total_steps,
                "onecycle.warmup_steps": int(s._schedule_phases[0]["end_step"]) + 1,
                "onecycle.stepped": "per batch",
            }
        return {}


def make_schedule(
    cfg: SchedulerConfig, optimizer: torch.optim.Optimizer, epochs: int, steps_per_epoch: int
) -> Schedule:
    """The configured schedule around the optimiser's lr. OneCycle leaves momentum (Adam's beta1,
    SGD's momentum) as configured: it would otherwise cycle it, overriding a tuned value."""
    if cfg.name is SchedulerName.cosine:
        return Schedule(torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=cfg.eta_min))
    if cfg.name is SchedulerName.onecycle:
        lr = optimizer.param_groups[0]["lr"]
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=lr,
            total_steps=epochs * steps_per_epoch,
            pct_start=cfg.pct_start,
            div_factor=cfg.div_factor,
            cycle_momentum=False,
        )
        return Schedule(scheduler, per_batch=True)
    return Schedule()


@dataclass(frozen=True)
class Applied:
    """Everything a training uses that the config sets, read back from the live objects: the
    optimiser's values, the schedule's, the precision's. Its params are the run's."""

    optimizer: OptimizerSettings
    others: tuple[tuple[str, object], ...] = ()

    @classmethod
    def of(cls, optimizer: OptimizerSettings, *parts: dict[str, object]) -> Applied:
        return cls(optimizer, tuple(item for part in parts for item in part.items()))

    def params(self) -> dict[str, object]:
        return {**self.optimizer.params(), **dict(self.others)}


def steps_per_epoch(samples: int, batch_size: int) -> int:
    return -(-samples // batch_size)
