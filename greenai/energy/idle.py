"""Idle power: what the devices draw with nothing running, to turn gross energy into net.

Measured once per sweep and host, before the first trial starts (the sweep's parent-run
callback does it in the sweeping process, before any job loads data or starts CUDA), after a
throw-away window (a counter's first reading after start-up can carry its set-up). Jobs read
the sweep folder's file; a job on another host measures for its host, under a lock, before it
loads its data. The paper said it subtracted idle energy; its code did not.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from greenai.energy.meters import Meter, Source

log = logging.getLogger(__name__)
THROWAWAY_SECONDS = 0.2


@dataclass(frozen=True)
class IdlePower:
    watts: float
    source: Source
    seconds: float

    def net(self, joules: float | None, seconds: float) -> float | None:
        """Gross joules minus what the idle devices would have drawn over `seconds`."""
        return None if joules is None else joules - self.watts * seconds


def measure_idle_power(meter: Meter, seconds: float) -> IdlePower:
    """A throw-away window, then a window of `seconds` with nothing running."""
    meter.begin("idle-throwaway")
    time.sleep(THROWAWAY_SECONDS)
    meter.end("idle-throwaway")
    meter.begin("idle")
    time.sleep(seconds)
    reading = meter.end("idle")
    return IdlePower((reading.total_j or 0.0) / reading.seconds, reading.source, reading.seconds)


class Shared(Protocol):
    """Where processes of one sweep share a measurement (greenai.stores.sweep_folder.SweepFolder)."""

    def once_per_host(self, kind: str, key: str, measure: Callable[[], dict[str, Any]]) -> dict[str, Any]: ...


def idle_power(meter: Meter, seconds: float, shared: Shared | None = None) -> IdlePower | None:
    """Idle power for this process's devices: measured here (single runs), or once per sweep
    and host and shared (through the sweep folder), the first process to get there measuring
    while the others wait for its result."""
    if seconds <= 0 or meter.source is Source.off:
        return None
    if meter.source is Source.estimated:
        # The estimate counts this process's busy CPU time only: its idle power is zero by construction.
        return IdlePower(0.0, Source.estimated, 0.0)
    if shared is None:
        return measure_idle_power(meter, seconds)

    def measure() -> dict[str, Any]:
        measured = measure_idle_power(meter, seconds)
        log.info("idle power %.1f W (%s, %.1f s)", measured.watts, meter.description, measured.seconds)
        return {"watts": measured.watts, "source": measured.source.value, "seconds": measured.seconds}

    saved = shared.once_per_host("idle", meter.description, measure)
    return IdlePower(saved["watts"], Source(saved["source"]), saved["seconds"])
