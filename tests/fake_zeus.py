"""Stand-ins for Zeus's device layer that behave as the real one does on an NVIDIA GPU, so the
real ZeusMonitor and greenai's meters run over them on a machine without one:

- NVML's energy counter is cumulative (mJ) and moves in steps: every `period` seconds it jumps
  by `watts x period`; between steps it reads the same value, so a short window reads 0 J or
  a whole step;
- RAPL's CPU package and DRAM counters, when a test wants them readable;
- Zeus's constructor failures (CUDA_VISIBLE_DEVICES holding GPU UUIDs) come from Zeus's own
  code, with only NVML's library calls faked.
"""

from __future__ import annotations

import math
import time

import pytest


class SteppedGPUs:
    """zeus.device.gpu.NVIDIAGPUs over one (or more) GPUs drawing `watts`."""

    def __init__(self, watts: float = 120.0, period: float = 0.02, count: int = 1) -> None:
        self.watts, self.period, self.count = watts, period, count
        self.start = time.monotonic()

    def __len__(self) -> int:
        return self.count

    def supports_get_total_energy_consumption(self, index: int) -> bool:
        return True

    def get_total_energy_consumption(self, index: int) -> int:
        steps = math.floor((time.monotonic() - self.start) / self.period)
        return int(round(steps * self.period * self.watts * 1000))

    def get_instant_power_usage(self, index: int) -> int:
        return int(self.watts * 1000)


class RAPLCPUs:
    """zeus.device.cpu.RAPLCPUs: one package drawing `watts`, DRAM `dram_watts` (1 ms steps)."""

    def __init__(self, watts: float = 40.0, dram_watts: float = 5.0) -> None:
        self.watts, self.dram_watts = watts, dram_watts
        self.start = time.monotonic()

    def __len__(self) -> int:
        return 1

    def supports_get_dram_energy_consumption(self, index: int) -> bool:
        return True

    def get_total_energy_consumption(self, index: int):  # type: ignore[no-untyped-def]
        from zeus.device.cpu.common import CpuDramMeasurement

        elapsed = math.floor((time.monotonic() - self.start) * 1000) / 1000
        return CpuDramMeasurement(cpu_mj=elapsed * self.watts * 1000, dram_mj=elapsed * self.dram_watts * 1000)


def install(monkeypatch: pytest.MonkeyPatch, gpus: SteppedGPUs | None = None, cpus: RAPLCPUs | None = None) -> None:
    """Make Zeus (its device layer and ZeusMonitor) see these devices; torch's GPU name too."""
    import torch
    import zeus.device
    import zeus.monitor.energy as monitor
    from zeus.device.cpu.common import ZeusCPUInitError
    from zeus.device.gpu.common import ZeusGPUInitError

    def get_gpus(ensure_homogeneous: bool = False):  # type: ignore[no-untyped-def]
        if gpus is None:
            raise ZeusGPUInitError("no NVML here")
        return gpus

    def get_cpus():  # type: ignore[no-untyped-def]
        if cpus is None:
            raise ZeusCPUInitError("no RAPL here")
        return cpus

    for module in (zeus.device, monitor):
        monkeypatch.setattr(module, "get_gpus", get_gpus)
        monkeypatch.setattr(module, "get_cpus", get_cpus)
    # No CUDA to synchronise with here; the fake counters need none.
    monkeypatch.setattr(monitor, "sync_execution_fn", lambda *a, **k: None)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Fake H100")
