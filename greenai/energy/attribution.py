"""Whose energy is whose when trials share a device's counters (trials packed onto one GPU).

Every worker reads the device's cumulative counters (they are global: any process reads the
same GPU counter) at its own window boundaries. Merged in time order, the readings cut time into
intervals; each interval's energy (per component: gpu, cpu, dram) and its seconds are split
equally among the windows active in it. An interval no window covers is the batch's overhead
(start-up, data loading, the time between trials), charged to nobody. So a trial that ran
alone for a while pays all of that while, and the attributed energies plus the overhead add up
to the counters' total over the batch.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field

from greenai.energy.counters import Reading, since


@dataclass(frozen=True)
class Window:
    key: Hashable  # (trial, window number), whatever the caller needs to find it again
    begin: float
    end: float


@dataclass
class Share:
    joules: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def add(self, joules: dict[str, float], seconds: float) -> None:
        for component, value in joules.items():
            self.joules[component] = self.joules.get(component, 0.0) + value
        self.seconds += seconds


@dataclass
class Attribution:
    windows: dict[Hashable, Share]
    overhead: Share
    total: Share


def cumulative(readings: Sequence[Reading], wraps: Mapping[str, float] | None = None) -> list[Reading]:
    """Readings in time order as running totals from the first. Two processes' reads of one
    counter may land in the opposite order of their timestamps by a few µs: such a read draws
    nothing (the higher value stays the base). A RAPL counter that wrapped between two reads
    is counted across its wrap (counters.since), so every process's readings agree."""
    ordered = sorted(readings, key=lambda r: r.time)
    if not ordered:
        return []
    wraps = wraps or {}
    base = dict(ordered[0].joules)
    totals = dict.fromkeys(base, 0.0)
    out = [Reading(ordered[0].time, dict(totals))]
    for reading in ordered[1:]:
        for key, value in reading.joules.items():
            if key not in base:
                base[key], totals[key] = value, 0.0
                continue
            drawn = since(base[key], value, wraps.get(key))
            if drawn > 0:
                base[key] = value
                totals[key] += drawn
        out.append(Reading(reading.time, dict(totals)))
    return out


def attribute(
    windows: Sequence[Window], readings: Sequence[Reading], wraps: Mapping[str, float] | None = None
) -> Attribution:
    """Split the energy between consecutive readings among the windows active over it. Every
    window's begin and end must be reading times (workers read at their boundaries); `wraps`:
    the RAPL counters' ranges (counters.ZeusCounters.wraps)."""
    shares = {w.key: Share() for w in windows}
    overhead, total = Share(), Share()
    ordered = cumulative(readings, wraps)
    for before, after in zip(ordered, ordered[1:], strict=False):  # consecutive pairs
        seconds = after.time - before.time
        if seconds <= 0:
            continue
        joules = after.minus(before)
        total.add(joules, seconds)
        active = [w for w in windows if w.begin <= before.time and after.time <= w.end]
        if not active:
            overhead.add(joules, seconds)
            continue
        each = {k: v / len(active) for k, v in joules.items()}
        for window in active:
            shares[window.key].add(each, seconds / len(active))
    return Attribution(shares, overhead, total)
