"""Idle and context power: what the devices draw doing nothing, to turn gross energy into net.

Two figures, each measured where it means what it says:

- `idle_power_w`: the devices with no CUDA context on the GPU (its lowest power state), read
  from the raw counters with no torch call (Zeus's windows synchronise CUDA, which creates a
  context). Net energy subtracts this: a trial's net energy is what training on it cost above
  a machine left alone, the context's own draw included, since no training can run without one.
- `context_power_w`: the same devices once this process holds a CUDA context, still doing no
  work (on an H200 roughly 118 W against 77 W). It is logged beside the idle figure, and the
  sweep's ledger charges the time between trials at it (the sweeping process holds a context
  from its measurement on, as every in-process trial does).

Each is read over sub-windows until the power is stable (three in a row within 5 % of their
median: clocks settle for seconds after a change, and starting Zeus's RAPL pollers costs CPU),
after a first read that starts those pollers. Measured once per sweep, host and devices (the
key is the GPU's UUID and whether RAPL is read: never a figure that differs between processes),
before the first trial (the sweep's parent-run callback does it in the sweeping process before
any job loads data or starts CUDA); jobs read the sweep folder's file; a job on another host
measures for its host, under a lock, before it loads its data. The paper said it subtracted idle
energy; its code did not.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from greenai.energy.counters import ZeusCounters, by_component
from greenai.energy.meters import Meter, Source

log = logging.getLogger(__name__)
THROWAWAY_SECONDS = 0.2
STABLE_WINDOWS = 3  # sub-windows in a row whose powers agree
STABLE_SPREAD = 0.05  # within this share of their median (or STABLE_FLOOR_W)
STABLE_FLOOR_W = 0.5
MOST_WAIT = 5.0  # x idle_seconds: then the last sub-windows are taken, labelled unsettled


@dataclass(frozen=True)
class IdlePower:
    watts: float  # no CUDA context: what net energy subtracts
    source: Source
    seconds: float
    context_watts: float | None = None  # a CUDA context held, no work (None on the CPU)
    settled: bool = True  # False: the power never held still within the time allowed
    components: dict[str, float] = field(default_factory=dict)  # idle watts by component

    def net(self, joules: float | None, seconds: float) -> float | None:
        """Gross joules minus what the idle devices would have drawn over `seconds`."""
        return None if joules is None else joules - self.watts * seconds

    def saved(self) -> dict[str, Any]:
        return {
            "watts": self.watts,
            "context_watts": self.context_watts,
            "source": self.source.value,
            "seconds": self.seconds,
            "settled": self.settled,
            "components": self.components,
        }

    @classmethod
    def load(cls, saved: dict[str, Any]) -> IdlePower:
        return cls(
            saved["watts"],
            Source(saved["source"]),
            saved["seconds"],
            saved.get("context_watts"),
            saved.get("settled", True),
            saved.get("components", {}),
        )


@dataclass(frozen=True)
class Stable:
    watts: dict[str, float]  # by component
    seconds: float
    settled: bool

    @property
    def total(self) -> float:
        return sum(self.watts.values())


def stable_power(counters: ZeusCounters, seconds: float, period: float | None = None) -> Stable:
    """The devices' power by component once it holds still: sub-windows of seconds/3 (at least
    20 counter periods, so a counter's steps do not read as change) until STABLE_WINDOWS in a
    row agree, averaged over those; after MOST_WAIT x seconds the last ones, labelled unsettled."""
    sub = max(seconds / STABLE_WINDOWS, 20 * (period or 0.0))
    readings = [counters.read()]
    deadline = time.monotonic() + MOST_WAIT * max(seconds, sub * STABLE_WINDOWS)
    while True:
        time.sleep(sub)
        readings.append(counters.read())
        if len(readings) <= STABLE_WINDOWS:
            continue
        span = readings[-STABLE_WINDOWS - 1 :]
        powers = [_watts(counters, a, b) for a, b in zip(span, span[1:], strict=False)]
        median = statistics.median(powers)
        settled = max(powers) - min(powers) <= max(STABLE_SPREAD * median, STABLE_FLOOR_W)
        if settled or time.monotonic() > deadline:
            first, last = span[0], span[-1]
            elapsed = last.time - first.time
            drawn = by_component(last.minus(first, counters.wraps))
            return Stable({k: v / elapsed for k, v in drawn.items()}, elapsed, settled)


def _watts(counters: ZeusCounters, before: Any, after: Any) -> float:
    return sum(after.minus(before, counters.wraps).values()) / (after.time - before.time)


def cuda_context(device: torch.device) -> Callable[[], None] | None:
    """What creates this process's CUDA context on `device` (one tiny allocation, waited for);
    None on the CPU."""
    if device.type != "cuda":
        return None

    def open_context() -> None:
        torch.zeros(1, device=device)
        torch.cuda.synchronize(device)

    return open_context


def measure_idle_power(
    counters: ZeusCounters,
    seconds: float,
    period: float | None = None,
    open_context: Callable[[], None] | None = None,
) -> IdlePower:
    """Idle power with no CUDA context, then (`open_context`, on a GPU) with one held."""
    counters.read()  # starts Zeus's RAPL pollers (at a process's first read)
    if not counters.wait_for_readers():
        log.warning("idle power: Zeus's RAPL pollers were still starting after 10 s; CPU idle may read high")
    time.sleep(THROWAWAY_SECONDS)
    _say_contexts(counters)
    idle = stable_power(counters, seconds, period)
    context = None
    if open_context is not None and counters.gpu is not None:
        try:
            open_context()
        except Exception as exc:  # CUDA's own errors: the idle figure stands without its partner
            log.warning("context power not measured: no CUDA context could be created (%s)", exc)
        else:
            context = stable_power(counters, seconds, period).total
    if not idle.settled:
        log.warning(
            "idle power did not settle within %.0f s: %.1f W, labelled unsettled", MOST_WAIT * seconds, idle.total
        )
    return IdlePower(idle.total, Source.measured, idle.seconds, context, idle.settled, idle.watts)


def _say_contexts(counters: ZeusCounters) -> None:
    """The idle figure means "no CUDA context" only if none is held: say who holds one."""
    held = counters.gpu.processes() if counters.gpu is not None else None
    if held:
        mine = " (this process)" if os.getpid() in held else ""
        log.warning(
            "idle power: %d process(es)%s already hold a CUDA context on the GPU, so idle_power_w includes "
            "a context's draw",
            len(held),
            mine,
        )


class Shared(Protocol):
    """Where processes of one sweep share a measurement (greenai.stores.sweep_folder.SweepFolder)."""

    def once_per_host(self, kind: str, key: str, measure: Callable[[], dict[str, Any]]) -> dict[str, Any]: ...


def idle_power(
    meter: Meter, seconds: float, shared: Shared | None = None, open_context: Callable[[], None] | None = None
) -> IdlePower | None:
    """Idle (and context) power for this process's devices: measured here (single runs), or
    once per sweep, host and devices and shared (through the sweep folder), the first process to
    get there measuring while the others wait for its result."""
    if seconds <= 0 or meter.source is Source.off:
        return None
    counters: ZeusCounters | None = getattr(meter, "counters", None)
    if meter.source is Source.estimated or counters is None:
        # The estimate counts this process's busy CPU time only: its idle power is zero by construction.
        return IdlePower(0.0, Source.estimated, 0.0)
    period = getattr(getattr(meter, "primary", meter), "period", None)

    def measure() -> dict[str, Any]:
        measured = measure_idle_power(counters, seconds, period, open_context)
        context = "" if measured.context_watts is None else f", {measured.context_watts:.1f} W with a CUDA context"
        log.info("idle power %.1f W with no CUDA context%s (%s)", measured.watts, context, meter.description)
        return measured.saved()

    if shared is None:
        return IdlePower.load(measure())
    return IdlePower.load(shared.once_per_host("idle", counters.key, measure))
