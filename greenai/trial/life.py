"""A trial's place on its sweep's energy ledger (greenai.energy.ledger): its start-up (preparing
it: config, meter, data, study link), the opening of its MLflow run, its life (from its first
window to its last: its energy_j), and its close (final figures written, the study told), each
measured, written to the sweep folder once the trial is closed. Packed trials' lives are placed
by the sweeper, from their attributed windows (greenai.sweep.packing)."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from greenai.energy.ledger import OVERHEAD, TRIAL, Entry, joules_of
from greenai.energy.meters import Measurement, Meter, Source

log = logging.getLogger(__name__)
# A trial's own overhead on the ledger: preparing it (config, meter, data, study link), opening
# its MLflow run, the warm-up on its shapes (greenai.training.warmup: what the process pays once
# per shape), closing it. Each is measured apart and they never overlap, also where the fused
# launcher prepares a batch of trials before it opens their runs.
STARTUP, OPENING, WARMUP, CLOSE = "start-up", "opening", "warm-up", "close"


@dataclass
class Piece:
    """A stretch of a trial's time in its own meter window, with when it began and ended."""

    meter: Meter
    name: str
    t0: float
    t1: float | None = None
    taken: Measurement | None = None

    @classmethod
    def begin(cls, meter: Meter, name: str) -> Piece:
        piece = cls(meter, name, time.monotonic())
        meter.begin(name)
        return piece

    def end(self) -> None:
        self.taken = self.meter.end(self.name)
        self.t1 = time.monotonic()

    def cancel(self) -> None:
        self.meter.cancel(self.name)

    def entry(self) -> Entry | None:
        if self.taken is None or self.t1 is None or self.taken.source is Source.off:
            return None
        joules = joules_of(self.taken.gpu_j, self.taken.cpu_j)
        return Entry(
            OVERHEAD, self.name, self.t0, self.t1, joules, socket.gethostname(), 0.0, self.taken.source.is_estimated
        )


@contextmanager
def piece(meter: Meter, name: str) -> Iterator[Piece]:
    """A Piece around a block; cancelled if the block raises."""
    measured = Piece.begin(meter, name)
    try:
        yield measured
    except BaseException:
        measured.cancel()
        raise
    measured.end()


@dataclass
class Life:
    """When a trial (or a fused group) trained: from before its first window to after its last."""

    t0: float
    t1: float | None = None

    @classmethod
    def begin(cls) -> Life:
        return cls(time.monotonic())

    def end(self) -> Life:
        self.t1 = time.monotonic()
        return self


def write(setup: Any, figures: Any, life: Life, closing: Piece) -> None:
    """The trial's entries on its sweep's ledger: start-up, opening, warm-up, life, close. Nothing outside a sweep,
    with energy off, or for a packed trial (the sweeper places those)."""
    folder = setup.job.sweep_folder if getattr(setup, "job", None) is not None else None
    if folder is None or setup.meter.source in (Source.off, Source.attributed) or life.t1 is None:
        return
    metrics = figures.metrics()
    number = setup.job.trial_number if setup.job.trial_number is not None else setup.job.job_num
    trial = Entry(
        TRIAL,
        f"trial {number}",
        life.t0,
        life.t1,
        joules_of(metrics.get("gpu_energy_j"), metrics.get("cpu_energy_j")),
        socket.gethostname(),
        metrics.get("trial_overhead_energy_j") or 0.0,
        figures.source.is_estimated,
    )
    own = (getattr(setup, "startup", None), getattr(setup, "opening", None), getattr(setup, "warmup", None), closing)
    pieces = [p.entry() for p in own if p is not None]
    try:
        folder.append_ledger(*(e.saved() for e in [trial, *pieces] if e is not None))
    except OSError as exc:  # the sweep's ledger then shows this trial as unexplained
        log.warning("%s: its entry on the sweep's energy ledger was not written (%s)", setup.name, exc)
