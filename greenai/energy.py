"""Energy meters: Zeus hardware counters, a labelled estimate, or none.

A meter measures named windows (`begin(name)` ... `end(name)`) and returns a `Measurement`
that says where its joules came from. Zeus on a machine with no NVML GPU and no readable RAPL
measures nothing and returns zero: `energy=auto` detects that up front and uses the estimate,
and a Zeus window that reads zero over a long window is never passed on as a measurement.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Protocol

import torch

from greenai.config import EnergyBackend, EnergyConfig
from greenai.errors import EnergyError

log = logging.getLogger(__name__)


class Source(str, Enum):
    measured = "measured"
    estimated = "estimated"
    # A run whose windows came partly from counters and partly from the estimate.
    partial = "partial"
    # Trials trained as one fused group: each gets an equal share of the group's windows.
    fused = "fused"
    off = "off"


@dataclass(frozen=True)
class Measurement:
    """One window: seconds, and joules by component (None where not measured)."""

    seconds: float
    gpu_j: float | None
    cpu_j: float | None
    source: Source

    @property
    def total_j(self) -> float | None:
        parts = [j for j in (self.gpu_j, self.cpu_j) if j is not None]
        return sum(parts) if parts else None


def combined_source(sources: list[Source]) -> Source:
    """The label of several windows together: one kind, or `partial` when they differ."""
    kinds = set(sources) - {Source.off}
    if not kinds:
        return Source.off
    if kinds == {Source.measured}:
        return Source.measured
    if kinds == {Source.estimated}:
        return Source.estimated
    if kinds == {Source.fused}:
        return Source.fused
    return Source.partial


class Meter(Protocol):
    source: Source
    description: str

    def begin(self, name: str) -> None: ...

    def end(self, name: str) -> Measurement: ...


@dataclass
class OffMeter:
    """Time only: for runs that do not want energy at all."""

    source: Source = Source.off
    description: str = "energy not measured (energy=off)"
    _started: dict[str, float] = field(default_factory=dict)

    def begin(self, name: str) -> None:
        self._started[name] = time.perf_counter()

    def end(self, name: str) -> Measurement:
        return Measurement(time.perf_counter() - self._started.pop(name), None, None, Source.off)


@dataclass
class EstimateMeter:
    """CPU-seconds of this process x a watts-per-core figure. Labelled `estimated` everywhere."""

    watts_per_cpu_core: float
    source: Source = Source.estimated
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


# A real counter advances within this long; a zero over a longer window is not a reading.
ZERO_READING_SECONDS = 0.5


class ZeusMeter:
    """Zeus's ZeusMonitor: GPU energy from NVML, CPU package (+DRAM) energy from RAPL."""

    source = Source.measured

    def __init__(self, device: torch.device) -> None:
        # Zeus logs its device probing (and a missing AMD library) on every trial: greenai
        # states the outcome in one line of its own instead.
        logging.getLogger("zeus").setLevel(logging.WARNING)
        logging.getLogger("zeus.device.gpu.amd").setLevel(logging.ERROR)
        from zeus.monitor import ZeusMonitor

        gpus = [device.index or 0] if device.type == "cuda" else []
        self.monitor = ZeusMonitor(gpu_indices=gpus if gpus else [], sync_execution_with="torch")
        if device.type == "cuda" and not self.monitor.gpu_indices:
            raise EnergyError(f"energy=zeus: Zeus cannot read the energy counter of {device}")
        if not self.monitor.gpu_indices and not self.monitor.cpu_indices:
            raise EnergyError(
                "energy=zeus: Zeus found no GPU (NVML) and no readable CPU (RAPL) counters here; "
                "use energy=auto or energy=estimate"
            )
        self.description = self._describe(device)

    def _describe(self, device: torch.device) -> str:
        parts = []
        if self.monitor.gpu_indices:
            parts.append(f"GPU {torch.cuda.get_device_name(device)} (NVML)")
        if self.monitor.cpu_indices:
            parts.append(f"CPU packages {self.monitor.cpu_indices} (RAPL)")
        return "zeus: " + ", ".join(parts)

    def begin(self, name: str) -> None:
        self.monitor.begin_window(name)

    def end(self, name: str) -> Measurement:
        m = self.monitor.end_window(name)
        gpu = sum(m.gpu_energy.values()) if m.gpu_energy else None
        cpu_parts = [*(m.cpu_energy or {}).values(), *(m.dram_energy or {}).values()]
        cpu = sum(cpu_parts) if cpu_parts else None
        total = (gpu or 0.0) + (cpu or 0.0)
        if total <= 0.0 and m.time >= ZERO_READING_SECONDS:
            raise EnergyError(f"Zeus read {total} J over {m.time:.2f} s in window {name!r}: the counters are not advancing")
        return Measurement(m.time, gpu, cpu, Source.measured)


class FallbackMeter:
    """Zeus while it reads, the estimate for any window it cannot: such runs are labelled partial."""

    def __init__(self, primary: ZeusMeter, fallback: EstimateMeter) -> None:
        self.primary, self.fallback = primary, fallback
        self.source = primary.source
        self.description = f"{primary.description}; falls back to {fallback.description}"

    def begin(self, name: str) -> None:
        self.fallback.begin(name)
        try:
            self.primary.begin(name)
        except Exception as exc:  # a backend that fails must not kill the trial
            log.warning("energy: Zeus failed to open window %r (%s); estimating it", name, exc)

    def end(self, name: str) -> Measurement:
        estimate = self.fallback.end(name)
        try:
            return self.primary.end(name)
        except Exception as exc:
            log.warning("energy: Zeus failed to read window %r (%s); using the estimate", name, exc)
            return estimate


@dataclass(frozen=True)
class IdlePower:
    """Power the devices draw with nothing running, to turn gross energy into net energy."""

    watts: float
    source: Source
    seconds: float

    def net(self, joules: float | None, seconds: float) -> float | None:
        """Gross joules minus what the idle devices would have drawn over the same time."""
        return None if joules is None else joules - self.watts * seconds


def measure_idle_power(meter: Meter, seconds: float) -> IdlePower:
    """A window of `seconds` with nothing running (the paper said it subtracted idle energy;
    its code did not)."""
    meter.begin("idle")
    time.sleep(seconds)
    reading = meter.end("idle")
    return IdlePower((reading.total_j or 0.0) / reading.seconds, reading.source, reading.seconds)


def idle_power(meter: Meter, seconds: float, shared: Path | None = None) -> IdlePower | None:
    """Idle power for this job's devices: measured once per sweep and host, shared through
    `shared` (the sweep folder) so the jobs after the first read it instead of waiting."""
    if seconds <= 0 or meter.source is Source.off:
        return None
    if meter.source is Source.estimated:
        # The estimate counts this process's busy CPU time only: its idle power is zero by construction.
        return IdlePower(0.0, Source.estimated, 0.0)
    if shared is None:
        return measure_idle_power(meter, seconds)
    path = shared / f"idle-{socket.gethostname()}-{meter.description.replace('/', '_').replace(' ', '_')[:80]}.json"
    return _shared_measurement(path, lambda: measure_idle_power(meter, seconds), timeout=seconds + 60)


def _shared_measurement(path: Path, measure: Callable[[], IdlePower], timeout: float) -> IdlePower:
    """The first job to get here measures (holding a lock file); the others wait and read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_suffix(".lock")
    deadline = time.monotonic() + timeout
    while not path.is_file():
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if time.monotonic() > deadline:  # the measuring job died: measure here instead
                break
            time.sleep(0.2)
            continue
        os.close(fd)
        try:
            result = measure()
            tmp = path.with_suffix(".partial")
            tmp.write_text(json.dumps({"watts": result.watts, "source": result.source.value, "seconds": result.seconds}))
            tmp.replace(path)
            return result
        finally:
            lock.unlink(missing_ok=True)
    if not path.is_file():
        return measure()
    saved = json.loads(path.read_text())
    return IdlePower(saved["watts"], Source(saved["source"]), saved["seconds"])


_METERS: dict[tuple[object, ...], Meter] = {}


def make_meter(cfg: EnergyConfig, device: torch.device) -> Meter:
    """The meter `energy=<backend>` asks for; `auto` = Zeus where it can measure, else the
    estimate. One per process and setting: probing the devices costs a tenth of a second,
    which a sweep of many trials in one process would otherwise pay every trial."""
    key = (cfg.backend, cfg.watts_per_cpu_core, str(device))
    if key not in _METERS:
        _METERS[key] = _new_meter(cfg, device)
    return _METERS[key]


def _new_meter(cfg: EnergyConfig, device: torch.device) -> Meter:
    estimate = EstimateMeter(cfg.watts_per_cpu_core)
    if cfg.backend is EnergyBackend.off:
        return OffMeter()
    if cfg.backend is EnergyBackend.estimate:
        return estimate
    try:
        zeus = ZeusMeter(device)
    except EnergyError:
        if cfg.backend is EnergyBackend.zeus:
            raise
        log.info("energy=auto: Zeus has no GPU or RAPL counter here, so energy is ESTIMATED (%s)", estimate.description)
        return estimate
    return FallbackMeter(zeus, estimate)
