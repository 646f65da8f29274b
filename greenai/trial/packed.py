"""Whether a trial is packed onto a GPU with others (`hydra/launcher=packed
sweep.trials_per_gpu=K`), and the meter it measures with then (greenai.energy.timeline)."""

from __future__ import annotations

import functools
import logging

import torch
from omegaconf import DictConfig

from greenai.energy.counters import ZeusCounters
from greenai.energy.meters import gpu_index
from greenai.energy.timeline import TimelineMeter
from greenai.stores.sweep_folder import SweepFolder

log = logging.getLogger(__name__)


def packed(config: DictConfig) -> bool:
    return int(config.sweep.trials_per_gpu) > 1 and torch.cuda.is_available()


def timeline_meter(
    config: DictConfig, folder: SweepFolder | None, trial_number: int | None, device: torch.device
) -> TimelineMeter | None:
    """The meter of a packed trial, or None where the trial is not packed or has no counters."""
    if folder is None or trial_number is None or not packed(config) or device.type != "cuda":
        return None
    if config.energy.backend.value in ("off", "estimate"):
        return None
    counters = ZeusCounters(gpu_index(device))
    if counters.gpu is None:
        log.warning(
            "trials_per_gpu=%s: cannot read the GPU's counters (%s); each trial measures alone, overlapping",
            config.sweep.trials_per_gpu,
            counters.unread.get("gpu"),
        )
        return None
    return TimelineMeter(counters, functools.partial(folder.append_timeline, trial_number), device)
