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
- Failures fall back per component, each said once: the GPU's counter and RAPL are read through
  separate monitors, so RAPL failing leaves the GPU measured; a GPU window that cannot be read
  is estimated (the run is `partial`); a meter that cannot be built at all is the labelled
  estimate under `auto`, and one line under `zeus`.
- A window never outlives its trial: `window()` cancels it on any exception.
- A RAPL window Zeus misread by a wrap-around is re-derived (`rederive`) and labelled.
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
    group's window was shared equally among (None for a window of one training). `rederived`:
    a RAPL reading Zeus got wrong by a wrap-around, corrected (`rederive`)."""

    seconds: float
    gpu_j: float | None
    cpu_j: float | None
    source: Source
    charged_seconds: float | None = None
    approximate: bool = False
    shared_by: int | None = None
    rederived: bool = False

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


# The most a RAPL package or DRAM counter can gain per second (Zeus's own assumption for its
# wrap poller): a window reading more, or less than zero, was misread by a wrap-around.
MAX_RAPL_WATTS = 1000.0


def rederive(joules: float, seconds: float, wrap: float | None) -> tuple[float, bool]:
    """A RAPL window as Zeus read it, and whether it had to be re-derived. Zeus adds the
    wrap-arounds its poller has seen, and the poller looks once a second: a window ending just
    after a wrap reads about one range too little (negative), and the next, once the poller has
    caught up, one range too much. Such a reading is moved by whole ranges into what a package
    can draw in the window; only windows longer than a range's worth at MAX_RAPL_WATTS (about
    4 minutes for a 262 kJ range) cannot be told apart from a real draw."""
    if 0.0 <= joules <= MAX_RAPL_WATTS * seconds or wrap is None:
        return joules, False
    while joules < 0.0:
        joules += wrap
    while joules > MAX_RAPL_WATTS * seconds and joules - wrap >= 0.0:
        joules -= wrap
    return joules, True


class _ZeusWithout:
    """Zeus's ZeusMonitor reads both device kinds when built, even for a monitor of one kind,
    and lets some of their errors escape (a RAPL file that cannot be read): a monitor of one
    kind is built with the other kind's lister answering "none here"."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __enter__(self) -> None:
        import zeus.monitor.energy as energy
        from zeus.device.cpu.common import ZeusCPUInitError
        from zeus.device.gpu.common import ZeusGPUInitError

        error = ZeusCPUInitError if self.kind == "cpus" else ZeusGPUInitError
        self.module, self.name = energy, f"get_{self.kind}"
        self.real = getattr(energy, self.name)

        def none(*args: object, **kwargs: object) -> None:
            raise error(f"greenai reads no {self.kind} through this monitor")

        setattr(energy, self.name, none)

    def __exit__(self, *exc: object) -> None:
        setattr(self.module, self.name, self.real)


def _monitor(gpu: int | None = None, cpus: list[int] | None = None):  # type: ignore[no-untyped-def]
    """A ZeusMonitor of the GPU at Zeus's index `gpu`, or of the CPU packages `cpus`."""
    from zeus.monitor import ZeusMonitor

    try:
        with _ZeusWithout("cpus" if gpu is not None else "gpus"):
            return ZeusMonitor(gpu_indices=[] if gpu is None else [gpu], cpu_indices=cpus or [])
    except Exception as exc:  # Zeus raises ValueError, RuntimeError and its own errors here
        raise EnergyError(f"Zeus cannot start measuring ({type(exc).__name__}: {exc})") from exc


class ZeusMeter:
    """Zeus's ZeusMonitor: the energy counter of the training GPU (NVML, found by UUID) and of
    every readable CPU package and DRAM (RAPL), each kind through its own monitor, so that
    RAPL failing mid-run (a file gone, a Zeus daemon that stops answering) drops the CPU's
    figures with one log line while the GPU's counter goes on. Raises EnergyError, saying why,
    where it cannot measure at all."""

    source = Source.measured

    def __init__(self, gpu_index: int | None, counters: ZeusCounters | None = None) -> None:
        self.counters = counters or ZeusCounters(gpu_index)
        if not self.counters.components:
            why = "; ".join(f"{k}: {v}" for k, v in self.counters.unread.items())
            raise EnergyError(
                "Zeus found no GPU (NVML) and no readable CPU (RAPL) counters here" + (f" ({why})" if why else "")
            )
        gpu = self.counters.gpu
        self.sync_index = gpu.torch_index if gpu is not None else None
        self.gpu_monitor = _monitor(gpu=gpu.index) if gpu is not None else None
        self.cpu_monitor = None
        if self.counters.cpu_indices:
            try:
                self.cpu_monitor = _monitor(cpus=self.counters.cpu_indices)
            except EnergyError as exc:
                if gpu is None:
                    raise
                self.counters.drop_cpus(exc)
        self.components = "+".join(self.counters.components)
        self.period = update_period(gpu.millijoules) if gpu is not None else None
        self.description = self._describe()

    def _describe(self) -> str:
        parts = []
        gpu = self.counters.gpu
        if gpu is not None:
            every = f", counter moves every {self.period * 1000:.0f} ms" if self.period else ""
            parts.append(f"GPU {gpu.name} (NVML GPU {gpu.index}, UUID {gpu.uuid[:8]}{every})")
        if self.counters.cpu_indices:
            parts.append(
                f"CPU packages {self.counters.cpu_indices} (RAPL{', with DRAM' if self.counters.dram else ''})"
            )
        unread = "".join(f"; {k} not measured ({v})" for k, v in self.counters.unread.items() if k == "gpu")
        return "zeus: " + ", ".join(parts) + unread

    def _sync(self) -> None:
        # torch's own index: Zeus would synchronise by its (NVML's) index, which may be another GPU.
        if self.sync_index is not None:
            torch.cuda.synchronize(self.sync_index)

    def begin(self, name: str) -> None:
        if self.gpu_monitor is None and self.cpu_monitor is None:
            raise EnergyError("no counter is left to read (RAPL failed earlier and there is no GPU counter)")
        self._sync()
        if self.gpu_monitor is not None:
            self.gpu_monitor.begin_window(name, sync_execution=False)
        self._on_cpus(lambda monitor: monitor.begin_window(name, sync_execution=False))

    def end(self, name: str) -> Measurement:
        self._sync()
        try:
            gpu_m = self._end_gpu(name)
        except BaseException:
            self._cancel_cpus(name)
            raise
        cpu_m = self._on_cpus(lambda monitor: monitor.end_window(name, sync_execution=False), name)
        if gpu_m is None and cpu_m is None:
            raise EnergyError(f"no counter read window {name!r}")
        seconds = (gpu_m or cpu_m).time
        gpu = sum(gpu_m.gpu_energy.values()) if gpu_m is not None else None
        cpu, rederived = self._cpu_joules(cpu_m, seconds) if cpu_m is not None else (None, False)
        total = (gpu or 0.0) + (cpu or 0.0)
        if total <= 0.0 and seconds >= max(ZERO_READING_SECONDS, 5 * (self.period or 0.0)):
            raise EnergyError(
                f"Zeus read {total} J over {seconds:.2f} s in window {name!r}: the counters are not advancing"
            )
        approximate = self.period is not None and seconds < APPROXIMATE_STEPS * self.period
        return Measurement(seconds, gpu, cpu, Source.measured, approximate=approximate, rederived=rederived)

    def _end_gpu(self, name: str):  # type: ignore[no-untyped-def]
        if self.gpu_monitor is None:
            return None
        with warnings.catch_warnings():
            # Zeus warns on every zero GPU reading; greenai labels short windows instead.
            warnings.simplefilter("ignore")
            return self.gpu_monitor.end_window(name, sync_execution=False)

    def _on_cpus(self, action, name: str | None = None):  # type: ignore[no-untyped-def]
        """`action(cpu_monitor)`, or None where RAPL is not read (or fails now: then it is dropped)."""
        monitor = self.cpu_monitor
        if monitor is None or (name is not None and name not in monitor.measurement_states):
            return None
        try:
            return action(monitor)
        except Exception as exc:  # Zeus's RAPL and daemon errors, OSError
            self._drop_cpus(exc)
            return None

    def _drop_cpus(self, exc: BaseException) -> None:
        if self.gpu_monitor is None:
            raise EnergyError(f"the CPU's RAPL counters failed ({type(exc).__name__}: {exc})") from exc
        self.cpu_monitor = None
        self.counters.drop_cpus(exc)

    def _cpu_joules(self, m, seconds: float) -> tuple[float | None, bool]:  # type: ignore[no-untyped-def]
        """The CPU packages' and DRAM's joules, each RAPL counter re-derived where Zeus's count
        of its wraps was off."""
        parts = [(f"cpu:{i}", j) for i, j in (m.cpu_energy or {}).items()]
        parts += [(f"dram:{i}", j) for i, j in (m.dram_energy or {}).items()]
        if not parts:
            return None, False
        fixed = [rederive(j, seconds, self.counters.wraps.get(key)) for key, j in parts]
        if any(j < 0 for j, _ in fixed):  # no range to re-derive by (a Zeus daemon's counters)
            self._drop_cpus(EnergyError("a RAPL counter went backwards"))
            return None, False
        return sum(j for j, _ in fixed), any(changed for _, changed in fixed)

    def _cancel_cpus(self, name: str) -> None:
        self._on_cpus(lambda monitor: monitor.end_window(name, sync_execution=False, cancel=True), name)

    def open_windows(self) -> list[str]:
        return [
            *(self.gpu_monitor.measurement_states if self.gpu_monitor else ()),
            *(self.cpu_monitor.measurement_states if self.cpu_monitor else ()),
        ]

    def cancel(self, name: str) -> None:
        if self.gpu_monitor is not None and name in self.gpu_monitor.measurement_states:
            self.gpu_monitor.end_window(name, sync_execution=False, cancel=True)
        self._cancel_cpus(name)


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
        self._said: set[str] = set()  # the failures said once already (a GPU lost fails every window)

    def begin(self, name: str) -> None:
        self.fallback.begin(name)
        try:
            self.primary.begin(name)
        except Exception as exc:  # a backend that fails must not kill the trial
            self._say(exc, f"failed to open window {name!r}")
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
            self._say(exc, f"failed to read window {name!r}")
            return estimate

    def _say(self, exc: Exception, what: str) -> None:
        """One warning per kind of failure; the windows it costs are estimated (the run says
        `partial`, and how many windows were estimated)."""
        kind = f"{type(exc).__name__}: {exc}"
        level = logging.DEBUG if kind in self._said else logging.WARNING
        self._said.add(kind)
        log.log(level, "energy: Zeus %s (%s); such windows are estimated", what, kind)

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
        zeus = ZeusMeter(gpu_index(device), _counters(cfg, device))
    except EnergyError as exc:
        if cfg.backend is EnergyBackend.zeus:
            raise EnergyError(f"energy=zeus: {exc}; use energy=auto or energy=estimate") from None
        log.info("energy=auto: %s, so energy is ESTIMATED (%s)", exc, estimate.description)
        return estimate
    if "gpu" in zeus.counters.unread:
        log.warning(
            "energy=auto: the GPU's energy is NOT measured (%s): %s", zeus.counters.unread["gpu"], zeus.description
        )
    return FallbackMeter(zeus, estimate)


def _counters(cfg: EnergyConfig, device: torch.device) -> ZeusCounters:
    """The counters for `device`. energy=zeus on a GPU needs that GPU's own counter: a run whose
    figures would leave out the training GPU is refused; energy=auto measures what it can."""
    counters = ZeusCounters(gpu_index(device))
    if cfg.backend is EnergyBackend.zeus and "gpu" in counters.unread and counters.components:
        raise EnergyError(f"the training GPU cannot be measured: {counters.unread['gpu']}")
    return counters
