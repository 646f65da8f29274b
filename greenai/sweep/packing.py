"""Several trials at once on one GPU (`sweep.trials_per_gpu=K`), and whose energy is whose.

Small models leave a modern GPU mostly idle, and its idle power dominates their energy; K
trials in K worker processes on the same GPU share that idle power (reference-measurements.md:
8 trials at once used 1.65x less energy than one after another). But each trial's own Zeus
windows then measure the whole GPU, the other trials' work included: summed, they count the
window K times. So the sweeper measures the GPU once over each batch of K trials, and gives
each trial a share of that energy in proportion to its busy time (training + evaluation
seconds):

    attributed_i = E_window x busy_i / sum_j busy_j

Attributed energy replaces the trial's overlapping measurement (`energy_j`; the raw figure is
kept as `overlapping_energy_j`) and is labelled `energy_source=attributed`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from greenai.energy import Meter, Source

log = logging.getLogger(__name__)
RULE = "GPU energy of the batch window x the trial's share of the batch's busy seconds"


def attribute(window_j: float, busy_seconds: Sequence[float]) -> list[float]:
    """Each trial's share of a window's energy, by its share of the busy time (equal shares
    when no trial reports any)."""
    total = sum(busy_seconds)
    if total <= 0:
        return [window_j / len(busy_seconds)] * len(busy_seconds)
    return [window_j * b / total for b in busy_seconds]


def window_meter(trials_per_gpu: int) -> Meter | None:
    """A meter for the whole GPU in the sweeping process, where packing makes one necessary
    and Zeus can read the GPU; None otherwise (CPU estimates count each process apart and
    need no attribution)."""
    if trials_per_gpu <= 1:
        return None
    if not torch.cuda.is_available():
        log.info("trials_per_gpu=%d: no CUDA GPU here, so trials run side by side without energy attribution", trials_per_gpu)
        return None
    from greenai.energy import EnergyError, ZeusMeter

    try:
        meter = ZeusMeter(torch.device("cuda", 0))
    except EnergyError as exc:
        log.warning("trials_per_gpu=%d: cannot measure the GPU as a whole (%s); energies overlap", trials_per_gpu, exc)
        return None
    assert meter.source is Source.measured
    return meter
