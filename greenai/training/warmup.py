"""The warm-up: what a process pays once per shape, paid before a trial's first measured window.

A process's first work on a shape costs more than the same work later: on a GPU the CUDA
context, cuDNN's autotuning of each new convolution shape (off with `deterministic=true`), lazy
initialisation of modules and kernels, the caching allocator's first blocks. Measured inside a
trial, it is charged to whichever trial of the process meets the shape first, so a sweep's first
(and smallest) model can read dearer than the next (issue 21). The trial layer measures the
warm-up in a window of its own and puts it on the sweep's ledger as overhead (greenai.trial.life).

`warm_up` trains a throwaway model of the trial's architecture for `steps` optimiser steps on
real batches of the trial's shapes (the full batch, and the epoch's last, shorter batch where
there is one), in training mode, then evaluates it on the evaluation's batch shapes; a fused
group's warm-up (`warm_up_group`) does the same with a group of as many members. Nothing of the
trial changes: its model and optimiser are built afterwards as ever, the global RNG streams
(CPU and the training GPU's) are restored as they were (`torch.random.fork_rng`), the batches
are drawn from a generator of its own, and the data are only read.

Once per process and shape (`Shapes`): a later trial of an already warmed shape skips it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from greenai.config import TrainConfig
from greenai.training import fusion, models
from greenai.training.augment import augmentation
from greenai.training.data import DeviceData
from greenai.training.inputs import TrainingData
from greenai.training.loop import EVAL_BATCH, evaluate_batches, train_on
from greenai.training.optim import Hyperparameters, make_optimizer, settings_from
from greenai.training.precision import Amp

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Shapes:
    """What a warm-up is for: the architecture, the batches' shapes, where and how it trains.
    Trials of equal Shapes meet no new shape after the first one's warm-up."""

    architecture: models.ArchitectureSpec
    input_shape: tuple[int, int, int]
    batch_size: int
    last_batch: int  # the epoch's last batch (batch_size when it divides the training split)
    test_count: int
    device: str
    precision: str
    optimizer: str
    augment: str
    members: int  # 1, or a fused group's size


# The Shapes this process has warmed up.
WARMED: set[Shapes] = set()


def shapes_of(config: TrainConfig, spec: models.ArchitectureSpec, data: TrainingData, members: int = 1) -> Shapes:
    last = data.train_count % config.batch_size or min(config.batch_size, data.train_count)
    return Shapes(
        spec,
        tuple(data.input_shape),  # type: ignore[arg-type]
        min(config.batch_size, data.train_count),
        last,
        data.test_count,
        str(data.device),
        config.precision.name.value,
        config.optimizer.name.value,
        config.dataset.augment.value,
        members,
    )


def _rng_kept(device: torch.device) -> contextlib.AbstractContextManager[object]:
    """The global RNG streams, as they were before, once the block ends."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


def _first(batches: Iterator[Batch]) -> Batch:
    try:
        return next(batches)
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()  # a streamed loader's iterator ends here


def _sizes(full: int, count: int) -> list[int]:
    """The batch sizes an epoch of `count` items in batches of `full` meets."""
    first = min(full, count)
    last = count % full if count > full else first
    return [first] if last in (0, first) else [first, last]


def _synchronised(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def warm_up(config: TrainConfig, spec: models.ArchitectureSpec, data: TrainingData, steps: int) -> None:
    """`steps` optimiser steps of a throwaway model on each training batch shape of the trial,
    then an evaluation of each of its evaluation batch shapes, in the trial's precision, with
    its optimiser and augmentation; the global RNG streams as they were."""
    device = data.device
    with _rng_kept(device):
        model: nn.Module = models.build(spec).to(device)
        optimizer = make_optimizer(model, settings_from(config))
        amp = Amp(config.precision.name, device)
        augment = augmentation(config.dataset.augment, 0, device)
        xb, yb = _first(data.train_batches(config.batch_size, torch.Generator().manual_seed(0)))
        batches = [(xb[:n], yb[:n]) for n in _sizes(config.batch_size, data.train_count)]
        for _ in range(steps):
            train_on(model, optimizer, ((augment(x) if augment else x, y) for x, y in batches), amp)
        xt, yt = _first(data.test_batches(EVAL_BATCH))
        evaluate_batches(model, [(xt[:n], yt[:n]) for n in _sizes(EVAL_BATCH, data.test_count)], device, amp)
        _synchronised(device)


def warm_up_group(spec: models.ArchitectureSpec, members: int, data: DeviceData, batch_size: int, steps: int) -> None:
    """warm_up for a fused group of `members` members: a throwaway group of as many, trained on
    each of the group's batch shapes and evaluated on each of its evaluation chunks."""
    device = data.device
    with _rng_kept(device):
        hyper = Hyperparameters(1e-3, 0.9, 0.999, 1e-8, 0.0)
        group = fusion.FusedGroup(spec, [fusion.Member(seed, hyper) for seed in range(members)], device)
        images, labels = next(fusion.group_batches(data, batch_size, group.generators))
        sizes = _sizes(batch_size, data.train_count)
        group.model.train()
        for _ in range(steps):
            for n in sizes:
                group.optimizer.zero_grad()
                fusion.member_losses(group.model(images[:n]), labels[:, :n]).sum().backward()
                group.optimizer.step()
        chunk = max(1, fusion.EVAL_MEMBER_IMAGES // members)
        for n in _sizes(chunk, data.test_count):
            fusion.evaluate_group(group.model, data.x_test[:n], data.y_test[:n])
        _synchronised(device)
