"""The cumulative energy counters Zeus reads: a GPU's NVML energy counter, the CPU packages'
and DRAM's RAPL counters.

Meters measure windows through Zeus's `ZeusMonitor`; this module reads the counters
themselves, through Zeus's device layer (`zeus.device.get_gpus`, `get_cpus`), where a window
is not the right tool: the idle power measured before any trial, the shared timeline of
trials packed onto one GPU (each worker reads the same global counter at its own boundaries),
and `python -m greenai.doctor`'s probe of how often the GPU counter moves.
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass

from greenai.errors import EnergyError


@dataclass(frozen=True)
class Reading:
    """Cumulative joules by component ("gpu", "cpu", "dram") at `time` (time.monotonic())."""

    time: float
    joules: dict[str, float]

    def minus(self, earlier: Reading) -> dict[str, float]:
        return {k: v - earlier.joules.get(k, 0.0) for k, v in self.joules.items()}


class ZeusCounters:
    """The counters of one GPU (by CUDA index, as torch and Zeus both count them) and of every
    readable CPU package. Any failure to reach them is an EnergyError saying why."""

    def __init__(self, gpu_index: int | None, cpus: bool = True) -> None:
        self.gpu_index = gpu_index
        self.gpus = _gpus() if gpu_index is not None else None
        if self.gpus is not None and not 0 <= gpu_index < len(self.gpus):
            raise EnergyError(f"Zeus sees {len(self.gpus)} GPU(s), so it cannot read GPU {gpu_index}")
        if self.gpus is not None and not self.gpus.supports_get_total_energy_consumption(gpu_index):
            raise EnergyError(f"GPU {gpu_index} has no energy counter (NVML needs a Volta or newer GPU)")
        self.cpus = _cpus() if cpus else None
        self.cpu_indices = list(range(len(self.cpus))) if self.cpus is not None else []
        self.dram = bool(self.cpus) and all(self.cpus.supports_get_dram_energy_consumption(i) for i in self.cpu_indices)

    @property
    def components(self) -> tuple[str, ...]:
        found = ("gpu",) if self.gpus is not None else ()
        if self.cpu_indices:
            found += ("cpu", "dram") if self.dram else ("cpu",)
        return found

    def read(self) -> Reading:
        joules: dict[str, float] = {}
        if self.gpus is not None:
            joules["gpu"] = self.gpus.get_total_energy_consumption(self.gpu_index) / 1000.0
        for index in self.cpu_indices:
            measured = self.cpus.get_total_energy_consumption(index)
            joules["cpu"] = joules.get("cpu", 0.0) + measured.cpu_mj / 1000.0
            if self.dram and measured.dram_mj is not None:
                joules["dram"] = joules.get("dram", 0.0) + measured.dram_mj / 1000.0
        return Reading(time.monotonic(), joules)


def _quiet_zeus() -> None:
    # Zeus logs its device probing (and a missing AMD library) every time: greenai states the
    # outcome in one line of its own instead.
    logging.getLogger("zeus").setLevel(logging.WARNING)
    logging.getLogger("zeus.device.gpu.amd").setLevel(logging.ERROR)


def _gpus():  # type: ignore[no-untyped-def]
    _quiet_zeus()
    from zeus.device import get_gpus

    try:
        return get_gpus()
    except Exception as exc:  # Zeus raises its own init errors, and ValueError for UUID device lists
        raise EnergyError(f"Zeus cannot reach the GPU's counters ({type(exc).__name__}: {exc})") from exc


def _cpus():  # type: ignore[no-untyped-def]
    _quiet_zeus()
    from zeus.device import get_cpus

    try:
        return get_cpus()
    except Exception:  # no RAPL, or no permission to read it: no CPU counters
        return None


def update_period(read_gpu_joules, timeout: float = 1.0) -> float | None:  # type: ignore[no-untyped-def]
    """How often a counter moves: the median time between changes of its value, read in a
    tight loop for up to `timeout` seconds (None if it moved fewer than three times)."""
    changes: list[float] = []
    last = read_gpu_joules()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(changes) < 12:
        value = read_gpu_joules()
        if value != last:
            changes.append(time.monotonic())
            last = value
    gaps = [b - a for a, b in zip(changes, changes[1:], strict=False)]
    return statistics.median(gaps) if len(gaps) >= 2 else None
