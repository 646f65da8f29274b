"""Energy meters: Zeus hardware counters, a labelled estimate, or none.

A meter measures named windows (`begin(name)` ... `end(name)`) and returns a `Measurement`
that says where its joules came from. Zeus's `ZeusMonitor` reads cumulative counters at each
window's ends (GPU: NVML; CPU packages and DRAM: RAPL), so a window's energy is a counter
difference:

- NVML's GPU counter moves in steps (tens of ms apart on recent GPUs). A window shorter than a
  few steps reads 0 J or a whole step; since a window's start falls anywhere within a step,
  that reading is right on average over many windows, and consecutive windows add up to the
  counter's total, exact to one step. greenai keeps those readings as they are (Zeus's
  `approx_instant_energy` would replace only the zeros, by instant power x time, which makes
  short windows read high on average) and marks windows shorter than `APPROXIMATE_STEPS`
  counter periods as approximate; the run says how many there were.
- Where Zeus has nothing to read (no NVIDIA GPU, no readable RAPL) it would return 0 J for
  every window: `energy=auto` detects that up front and uses the estimate, and a window of many
  counter periods that reads zero is never passed on as a measurement.
- Any failure to build or read Zeus's monitor becomes the labelled estimate under `auto`, and
  one line under `zeus`.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Protocol

import torch

from greenai.config import EnergyBackend, EnergyConfig
from greenai.energy.counters import ZeusCounters, update_period
from greenai.errors import EnergyError

log = logging.getLogger(__name__)
# A window shorter than this many counter periods reads within one step of its true energy:
# right on average, but approximate on its own.
APPROXIMATE_STEPS = 10
# A counter that reads zero over a window this long (and over several periods) is not advancing.
ZERO_READING_SECONDS = 0.5


class Source(str, Enum):
    measured = "measured"
    estimated = "estimated"
    # A run whose windows came partly from counters and partly from the estimate.
    partial = "partial"
    # Trials packed onto one GPU: the GPU's counter split among the trials active at each moment.
    attributed = "attributed"
    # Members of a fused group: each gets an equal share of the group's windows.
    fused = "fused"
    fused_estimated = "fused_estimated"
    off = "off"

    @property
    def is_estimated(self) -> bool:
        return self in (Source.estimated, Source.partial, Source.fused_estimated)


@dataclass(frozen=True)
class Measurement:
    """One window: seconds, and joules by component (None where not measured).

    `charged_seconds` is the time idle power is charged for: the window's seconds, or a share
    of them where the window's energy is shared (packed, fused). `approximate`: a counter
    window shorter than APPROXIMATE_STEPS counter periods. `shared_by`: the members a fused
    group's window was shared equally among (None for a window of one training)."""

    seconds: float
    gpu_j: float | None
    cpu_j: float | None
    source: Source
    charged_seconds: float | None = None
    approximate: bool = False
    shared_by: int | None = None

    @property
    def total_j(self) -> float | None:
        parts = [j for j in (self.gpu_j, self.cpu_j) if j is not None]
        return sum(parts) if parts else None

    @property
    def charged(self) -> float:
        return self.seconds if self.charged_seconds is None else self.charged_seconds

    def share(self, members: int) -> Measurement:
        """An equal 1/members share of the window (members doing equal work in it)."""

        def part(j: float | None) -> float | None:
            return None if j is None else j / members

        source = {Source.measured: Source.fused, Source.estimated: Source.fused_estimated}.get(self.source, self.source)
        return replace(
            self,
            gpu_j=part(self.gpu_j),
            cpu_j=part(self.cpu_j),
            source=source,
            charged_seconds=self.charged / members,
            shared_by=members,
        )


def combined_source(sources: list[Source]) -> Source:
    """The label of several windows together: one kind, or `partial` when they differ."""
    kinds = set(sources) - {Source.off}
    if not kinds:
        return Source.off
    if len(kinds) == 1:
        return kinds.pop()
    return Source.partial


class Meter(Protocol):
    source: Source
    description: str
    # What the joules cover: "gpu", "gpu+cpu+dram", "cpu-time estimate", "none".
    components: str

    def begin(self, name: str) -> None: ...

    def end(self, name: str) -> Measurement: ...

    def cancel(self, name: str) -> None:
        """Forget an open window (its work failed): nothing is measured, nothing stays open."""
        ...


@dataclass
class Window:
    """What `window()` measured, once its block has ended."""

    measurement: Measurement | None = None

    @property
    def taken(self) -> Measurement:
        assert self.measurement is not None, "read a window once its block has ended"
        return self.measurement


@contextmanager
def window(meter: Meter, name: str) -> Iterator[Window]:
    """`meter`'s window `name` around a block. An exception inside it (a CUDA out-of-memory
    error, a store that failed) cancels the window and is raised on: a window left open would
    be ended by the next trial of the process, which would then report this one's joules."""
    taken = Window()
    meter.begin(name)
    try:
        yield taken
    except BaseException:
        meter.cancel(name)
        raise
    taken.measurement = meter.end(name)


@dataclass
class OffMeter:
    """Time only: for runs that do not want energy at all."""

    source: Source = Source.off
    description: str = "energy not measured (energy=off)"
    components: str = "none"
    _started: dict[str, float] = field(default_factory=dict)

    def begin(self, name: str) -> None:
        self._started[name] = time.perf_counter()

    def end(self, name: str) -> Measurement:
        return Measurement(time.perf_counter() - self._started.pop(name), None, None, Source.off)

    def cancel(self, name: str) -> None:
        self._started.pop(name, None)


@dataclass
class EstimateMeter:
    """CPU-seconds of this process x a watts-per-core figure. Labelled `estimated` everywhere."""

    watts_per_cpu_core: float
    source: Source = Source.estimated
    components: str = "cpu-time estimate"
    _started: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def description(self) -> str:
        return f"estimate: process CPU-seconds x {self.watts_per_cpu_core:g} W per core ({os.cpu_count()} cores)"

    def begin(self, name: str) -> None:
        self._started[name] = (time.perf_counter(), time.process_time())

    def end(self, name: str) -> Measurement:
        wall0, cpu0 = self._started.pop(name)
        cpu_seconds = time.process_time() - cpu0
        return Measurement(time.perf_counter() - wall0, None, cpu_seconds * self.watts_per_cpu_core, Source.estimated)

    def cancel(self, name: str) -> None:
        self._started.pop(name, None)


class ZeusMeter:
    """Zeus's ZeusMonitor: the energy counter of the training GPU (NVML) and of every readable
    CPU package and DRAM (RAPL). Raises EnergyError, saying why, where it cannot measure."""

    source = Source.measured

    def __init__(self, gpu_index: int | None) -> None:
        self.counters = ZeusCounters(gpu_index)
        if not self.counters.components:
            raise EnergyError("Zeus found no GPU (NVML) and no readable CPU (RAPL) counters here")
        from zeus.monitor import ZeusMonitor

        gpus = [] if gpu_index is None else [gpu_index]
        try:
            self.monitor = ZeusMonitor(
                gpu_indices=gpus, cpu_indices=self.counters.cpu_indices, sync_execution_with="torch"
            )
        except Exception as exc:  # Zeus raises ValueError, RuntimeError and its own errors here
            raise EnergyError(f"Zeus cannot start measuring ({type(exc).__name__}: {exc})") from exc
        self.components = "+".join(self.counters.components)
        self.period = (
            update_period(lambda: self.counters.gpus.get_total_energy_consumption(gpu_index)) if gpus else None
        )
        self.description = self._describe(gpu_index)

    def _describe(self, gpu_index: int | None) -> str:
        parts = []
        if gpu_index is not None:
            every = f", counter moves every {self.period * 1000:.0f} ms" if self.period else ""
            parts.append(f"GPU {torch.cuda.get_device_name(gpu_index)} (NVML{every})")
        if self.counters.cpu_indices:
            parts.append(
                f"CPU packages {self.counters.cpu_indices} (RAPL{', with DRAM' if self.counters.dram else ''})"
            )
        return "zeus: " + ", ".join(parts)

    def begin(self, name: str) -> None:
        self.monitor.begin_window(name, sync_execution=bool(self.monitor.gpu_indices))

    def end(self, name: str) -> Measurement:
        with warnings.catch_warnings():
            # Zeus warns on every zero GPU reading; greenai labels short windows instead.
            warnings.simplefilter("ignore")
            m = self.monitor.end_window(name, sync_execution=bool(self.monitor.gpu_indices))
        gpu = sum(m.gpu_energy.values()) if m.gpu_energy else None
        cpu_parts = [*(m.cpu_energy or {}).values(), *(m.dram_energy or {}).values()]
        cpu = sum(cpu_parts) if cpu_parts else None
        total = (gpu or 0.0) + (cpu or 0.0)
        if total <= 0.0 and m.time >= max(ZERO_READING_SECONDS, 5 * (self.period or 0.0)):
            raise EnergyError(
                f"Zeus read {total} J over {m.time:.2f} s in window {name!r}: the counters are not advancing"
            )
        approximate = self.period is not None and m.time < APPROXIMATE_STEPS * self.period
        return Measurement(m.time, gpu, cpu, Source.measured, approximate=approximate)

    def open_windows(self) -> list[str]:
        return list(self.monitor.measurement_states)

    def cancel(self, name: str) -> None:
        if name in self.monitor.measurement_states:
            self.monitor.end_window(name, sync_execution=False, cancel=True)


class FallbackMeter:
    """Zeus while it reads, the estimate for any window it cannot: such runs are labelled partial."""

    def __init__(self, primary: ZeusMeter, fallback: EstimateMeter) -> None:
        self.primary, self.fallback = primary, fallback
        self.source = primary.source
        self.components = primary.components
        self.counters = primary.counters
        self.description = f"{primary.description}; falls back to {fallback.description}"
        # Windows Zeus opened: a window Zeus failed to open is estimated, never read from Zeus
        # (which might still hold an older window of that name).
        self._opened: set[str] = set()

    def begin(self, name: str) -> None:
        self.fallback.begin(name)
        try:
            self.primary.begin(name)
        except Exception as exc:  # a backend that fails must not kill the trial
            log.warning("energy: Zeus failed to open window %r (%s); estimating it", name, exc)
        else:
            self._opened.add(name)

    def end(self, name: str) -> Measurement:
        estimate = self.fallback.end(name)
        if name not in self._opened:
            return estimate
        self._opened.discard(name)
        try:
            return self.primary.end(name)
        except Exception as exc:
            log.warning("energy: Zeus failed to read window %r (%s); using the estimate", name, exc)
            return estimate

    def cancel(self, name: str) -> None:
        self.fallback.cancel(name)
        self._opened.discard(name)
        try:
            self.primary.cancel(name)
        except Exception as exc:  # the window is gone either way
            log.debug("energy: cancelling window %r: %s", name, exc)


_METERS: dict[tuple[object, ...], Meter] = {}


def make_meter(cfg: EnergyConfig, device: torch.device) -> Meter:
    """The meter `energy=<backend>` asks for; `auto` = Zeus where it can measure, else the
    estimate. One per process and setting: probing the devices costs a fraction of a second,
    which a sweep of many trials in one process would otherwise pay every trial."""
    key = (cfg.backend, cfg.watts_per_cpu_core, str(device))
    if key not in _METERS:
        _METERS[key] = _new_meter(cfg, device)
    return _METERS[key]


def gpu_index(device: torch.device) -> int | None:
    """The CUDA index Zeus should read for `device` (None on the CPU)."""
    if device.type != "cuda":
        return None
    return device.index if device.index is not None else torch.cuda.current_device()


def _new_meter(cfg: EnergyConfig, device: torch.device) -> Meter:
    estimate = EstimateMeter(cfg.watts_per_cpu_core)
    if cfg.backend is EnergyBackend.off:
        return OffMeter()
    if cfg.backend is EnergyBackend.estimate:
        return estimate
    try:
        zeus = ZeusMeter(gpu_index(device))
    except EnergyError as exc:
        if cfg.backend is EnergyBackend.zeus:
            raise EnergyError(f"energy=zeus: {exc}; use energy=auto or energy=estimate") from None
        log.info("energy=auto: %s, so energy is ESTIMATED (%s)", exc, estimate.description)
        return estimate
    return FallbackMeter(zeus, estimate)
