"""Stand-ins for Zeus's device layer that behave as the real one does on an NVIDIA GPU host, so
the real ZeusMonitor and greenai's meters run over them on a machine without one. Each can
step, wrap, fail and lag:

- NVML's energy counter is cumulative (mJ) and moves in steps: every `period` seconds it jumps
  by the power drawn over the step; between steps it reads the same value, so a short window
  reads 0 J or a whole step. Each GPU has a UUID (NVML's `nvmlDeviceGetUUID`, torch's
  `get_device_properties(i).uuid`), and torch may number the GPUs in another order than NVML.
- RAPL's CPU package and DRAM counters wrap: the register counts up to its range and restarts
  at zero. As Zeus's RAPLFile does, each "process" (each RAPLCPUs) adds the wrap-arounds its own
  poller has seen since its first read, and the poller looks only every `poll` seconds: a read
  just after a wrap misses it (lag), and a process started after a wrap counts one fewer.
- Power is a number or set over time (`set_watts`), so a test can make a device settle, hold a
  CUDA context, or start a reader that costs power for a while.
- `fail` makes every read raise a given Zeus error (a virtual GPU without a counter, a RAPL file
  gone, a Zeus daemon that stopped answering).
- Zeus's constructor failures (CUDA_VISIBLE_DEVICES holding GPU UUIDs) come from Zeus's own
  code, with only NVML's library calls faked.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable
from types import SimpleNamespace

import pytest


class Power:
    """Cumulative joules of a device drawing `watts`, advanced in steps of `period` seconds;
    readable at any moment, past ones included (a poller's view)."""

    def __init__(self, watts: float, period: float, start_j: float = 0.0, t0: float | None = None) -> None:
        self.period = period
        self.t0 = time.monotonic() if t0 is None else t0  # one t0 for several processes: one counter
        # (first step, joules at it, watts from it on): one segment per set_watts
        self._segments: list[tuple[int, float, float]] = [(0, start_j, watts)]
        self._lock = threading.Lock()

    @property
    def watts(self) -> float:
        return self._segments[-1][2]

    def _step(self, now: float) -> int:
        return max(0, math.floor((now - self.t0) / self.period))

    def joules(self, now: float | None = None) -> float:
        """The counter's value at `now` (at the last step before it)."""
        return self._at_step(self._step(time.monotonic() if now is None else now))

    def _at_step(self, step: int) -> float:
        with self._lock:
            first, joules, watts = next(seg for seg in reversed(self._segments) if seg[0] <= step)
        return joules + (step - first) * self.period * watts

    def set_watts(self, watts: float, after: float = 0.0, since: float | None = None) -> None:
        """Draw `watts` from the next step on, or from `after` seconds from now, or from `since`
        (a time.monotonic() value) when given: a schedule set step by step from one `since`
        stays where it was meant even if the process is paused between two steps (the steps
        before keep what they drew)."""
        step = self._step((time.monotonic() if since is None else since) + after) + 1
        joules = self._at_step(step)
        with self._lock:
            self._segments = [seg for seg in self._segments if seg[0] < step] + [(step, joules, watts)]


class SteppedGPUs:
    """zeus.device.gpu.NVIDIAGPUs over `count` GPUs, in NVML's order, each drawing `watts`
    (one number, or one per GPU). `torch_order[i]`: the NVML index of torch's GPU i."""

    def __init__(
        self,
        watts: float | list[float] = 120.0,
        period: float = 0.02,
        count: int = 1,
        torch_order: list[int] | None = None,
        names: list[str] | None = None,
    ) -> None:
        each = watts if isinstance(watts, list) else [watts] * count
        self.count, self.period = len(each), period
        self.power = [Power(w, period) for w in each]
        self.uuids = [f"GPU-{i:08x}-0000-4000-8000-00000000abcd" for i in range(self.count)]
        self.names = names or ["Fake H100"] * self.count
        self.torch_order = torch_order or list(range(self.count))
        self.gpus = [SimpleNamespace(handle=("nvml", i)) for i in range(self.count)]
        self.fail: Exception | None = None
        self.processes: list[int] = []  # pids holding a CUDA context (NVML's compute processes)
        self.reads = 0
        self._steps_down: list[float] = []

    def steps_from_first_read(self, *watts: float, every: float = 0.2) -> SteppedGPUs:
        """From its first read on, GPU 0's power steps through `watts`, one every `every`
        seconds (clocks settling after earlier work, say)."""
        self._steps_down = list(watts)
        self._every = every
        return self

    def hold_context(self, watts: float, index: int = 0) -> None:
        """This process creates a CUDA context on the GPU: it draws `watts` from then on."""
        self.processes.append(os.getpid())
        self.set_watts(watts, index)

    @property
    def watts(self) -> float:
        return self.power[0].watts

    @watts.setter
    def watts(self, value: float) -> None:
        self.set_watts(value)

    def set_watts(self, watts: float, index: int = 0) -> None:
        self.power[index].set_watts(watts)

    def __len__(self) -> int:
        return self.count

    def supports_get_total_energy_consumption(self, index: int) -> bool:
        return True

    def get_total_energy_consumption(self, index: int) -> int:
        if self.fail is not None:
            raise self.fail
        self.reads += 1
        if self.reads == 1:
            first_read = time.monotonic()
            for i, watts in enumerate(self._steps_down):
                self.power[0].set_watts(watts, after=self._every * i, since=first_read)
        return int(round(self.power[index].joules() * 1000))

    def get_instant_power_usage(self, index: int) -> int:
        return int(self.power[index].watts * 1000)


class RAPLCPUs:
    """zeus.device.cpu.RAPLCPUs of one process: one package drawing `watts` and its DRAM
    `dram_watts` (1 ms steps). The package register wraps at `wrap_j` joules, starting at
    `start_j` (DRAM wraps at the same range). `poll`: how often this process's wrap poller
    looks (Zeus polls every second)."""

    def __init__(
        self,
        watts: float = 40.0,
        dram_watts: float = 5.0,
        wrap_j: float = 262_143.0,
        start_j: float = 0.0,
        poll: float | None = 1.0,
        shared: tuple[Power, Power] | None = None,
        t0: float | None = None,
    ) -> None:
        self.wrap_j, self.poll = wrap_j, poll
        self.package, self.dram_power = shared or (Power(watts, 0.001, start_j, t0), Power(dram_watts, 0.001, 0.0, t0))
        self.cpus = [SimpleNamespace(rapl_file=_RaplFile(wrap_j), dram=_RaplFile(wrap_j))]
        self._tracker_start: float | None = None
        self._looked: float | None = None  # poll=None: the poller looks only when a test says so
        self.fail: Exception | None = None
        self.reads = 0
        self.reader_cost: tuple[float, float] | None = None  # (watts, seconds) starting the poller costs
        self._reader = None

    def readers_cost(self, watts: float, seconds: float) -> RAPLCPUs:
        """Starting this process's poller (at its first read) is a real child process, busy for
        `seconds`, then idle, as Zeus's spawned poller is (an interpreter and Zeus's imports,
        then a read a second); while it is busy the package draws `watts` more."""
        self.reader_cost = (watts, seconds)
        return self

    def _start_reader(self) -> None:
        import subprocess
        import sys

        assert self.reader_cost is not None
        busy = (
            "import sys, time\nend = time.monotonic() + float(sys.argv[1])\n"
            "while time.monotonic() < end: pass\nprint('ready', flush=True)\nsys.stdin.read()\n"
        )
        self._reader = subprocess.Popen(
            [sys.executable, "-c", busy, str(self.reader_cost[1])], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        os.set_blocking(self._reader.stdout.fileno(), False)
        self.cpus[0].rapl_file._wraparound_tracker = SimpleNamespace(process=self._reader)
        self.package.set_watts(self.package.watts + self.reader_cost[0])

    def _reader_done(self) -> None:
        """The child said it is done starting: the extra draw stops."""
        if self._reader is not None and self.reader_cost is not None and self._reader.stdout.read():
            self.package.set_watts(self.package.watts - self.reader_cost[0])
            self.reader_cost = None

    def stop_readers(self) -> None:
        if self._reader is not None:
            self._reader.stdin.close()
            self._reader.wait(timeout=30)

    def look(self) -> None:
        """The poller looks now (poll=None): it counts every wrap so far."""
        self._looked = time.monotonic()

    def wrapped(self) -> int:
        """How many times the package register has wrapped since it started."""
        return int(self.package.joules() // self.wrap_j)

    def another_process(self, poll: float | None = None) -> RAPLCPUs:
        """The same registers, read by another process (its own poller, started at its first read)."""
        return RAPLCPUs(
            wrap_j=self.wrap_j, poll=self.poll if poll is None else poll, shared=(self.package, self.dram_power)
        )

    def __len__(self) -> int:
        return 1

    def supports_get_dram_energy_consumption(self, index: int) -> bool:
        return True

    def _wraps_seen(self, power: Power, now: float) -> int:
        """Wraps this process's poller counted: those between its first read and its last poll."""
        assert self._tracker_start is not None
        if self.poll is None:
            last_poll = max(self._tracker_start, min(self._looked or self._tracker_start, now))
        else:
            last_poll = self._tracker_start + math.floor((now - self._tracker_start) / self.poll) * self.poll
        return int(power.joules(last_poll) // self.wrap_j) - int(power.joules(self._tracker_start) // self.wrap_j)

    def _value_mj(self, power: Power, now: float) -> float:
        register = power.joules(now) % self.wrap_j
        return (register + self._wraps_seen(power, now) * self.wrap_j) * 1000

    def get_total_energy_consumption(self, index: int):  # type: ignore[no-untyped-def]
        from zeus.device.cpu.common import CpuDramMeasurement

        if self.fail is not None:
            raise self.fail
        now = time.monotonic()
        if self._tracker_start is None:
            self._tracker_start = now  # Zeus starts the poller at the first read
            if self.reader_cost is not None:
                self._start_reader()
        self._reader_done()
        self.reads += 1
        return CpuDramMeasurement(
            cpu_mj=self._value_mj(self.package, now), dram_mj=self._value_mj(self.dram_power, now)
        )


class _RaplFile:
    def __init__(self, wrap_j: float) -> None:
        self.max_energy_range_uj = wrap_j * 1e6


def install(
    monkeypatch: pytest.MonkeyPatch,
    gpus: SteppedGPUs | None = None,
    cpus: RAPLCPUs | None = None,
    cpus_error: Callable[[], Exception] | None = None,
) -> None:
    """Make Zeus (its device layer and ZeusMonitor), NVML's UUIDs and torch's view of the GPUs
    see these devices. `cpus_error`: get_cpus raises it (as Zeus's RAPLCPUs does when a RAPL
    file cannot be read)."""
    import pynvml
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
        if cpus_error is not None:
            raise cpus_error()
        if cpus is None:
            raise ZeusCPUInitError("no RAPL here")
        return cpus

    for module in (zeus.device, monitor):
        monkeypatch.setattr(module, "get_gpus", get_gpus)
        monkeypatch.setattr(module, "get_cpus", get_cpus)
    # No CUDA to synchronise with here; the fake counters need none.
    monkeypatch.setattr(monitor, "sync_execution_fn", lambda *a, **k: None)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)
    if gpus is None:
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Fake H100")
        return

    def nvml_uuid(handle):  # type: ignore[no-untyped-def]
        return gpus.uuids[handle[1]]

    def properties(index):  # type: ignore[no-untyped-def]
        index = torch.device(index).index if not isinstance(index, int) else index
        nvml = gpus.torch_order[index or 0]
        return SimpleNamespace(name=gpus.names[nvml], uuid=gpus.uuids[nvml].removeprefix("GPU-"))

    monkeypatch.setattr(pynvml, "nvmlDeviceGetUUID", nvml_uuid)
    monkeypatch.setattr(
        pynvml, "nvmlDeviceGetComputeRunningProcesses", lambda h: [SimpleNamespace(pid=p) for p in gpus.processes]
    )
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", properties)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: properties(index or 0).name)


def install_nvml(
    monkeypatch: pytest.MonkeyPatch,
    gpus: SteppedGPUs,
    migs: dict[int, list[str]] | None = None,
    cpus: RAPLCPUs | None = None,
) -> None:
    """Zeus's own NVIDIAGPUs (its CUDA_VISIBLE_DEVICES parsing included) over NVML's library
    calls answered by `gpus`; torch sees the GPUs in `gpus.torch_order`, or the one MIG instance
    CUDA_VISIBLE_DEVICES names. `migs`: the UUIDs of each GPU's MIG instances; `cpus`: RAPL."""
    import pynvml
    import torch
    import zeus.device.gpu as gpu_layer
    import zeus.monitor.energy as monitor
    from zeus.device.cpu.common import ZeusCPUInitError

    migs = migs or {}
    monkeypatch.setattr(gpu_layer, "_gpus", None)
    monkeypatch.setattr(gpu_layer, "nvml_is_available", lambda: True)
    monkeypatch.delenv("ZEUSD_SOCK_PATH", raising=False)
    calls = {
        "nvmlInit": lambda: None,
        "nvmlShutdown": lambda: None,
        "nvmlDeviceGetCount": lambda: gpus.count,
        "nvmlDeviceGetHandleByIndex": lambda i: ("nvml", i),
        "nvmlDeviceGetArchitecture": lambda h: pynvml.NVML_DEVICE_ARCH_VOLTA + 2,
        "nvmlDeviceGetTotalEnergyConsumption": lambda h: gpus.get_total_energy_consumption(h[1]),
        "nvmlDeviceGetUUID": lambda h: gpus.uuids[h[1]] if h[0] == "nvml" else migs[h[1]][h[2]],
        "nvmlDeviceGetMaxMigDeviceCount": lambda h: len(migs.get(h[1], [])),
        "nvmlDeviceGetMigDeviceHandleByIndex": lambda h, slot: ("mig", h[1], slot),
    }

    def no_c2c(handle):  # type: ignore[no-untyped-def]
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    calls["nvmlDeviceGetC2cModeInfoV"] = no_c2c
    for name, call in calls.items():
        monkeypatch.setattr(pynvml, name, call)

    def no_rapl():  # type: ignore[no-untyped-def]
        if cpus is not None:
            return cpus
        raise ZeusCPUInitError("no RAPL here")

    import zeus.device

    for module in (zeus.device, monitor):
        monkeypatch.setattr(module, "get_cpus", no_rapl)
    monkeypatch.setattr(monitor, "sync_execution_fn", lambda *a, **k: None)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)

    def properties(index):  # type: ignore[no-untyped-def]
        import os

        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        if visible.startswith("MIG-"):
            return SimpleNamespace(name="Fake H100 MIG 1g.10gb", uuid=visible.removeprefix("MIG-"))
        if visible.startswith("GPU-"):
            return SimpleNamespace(name="Fake H100", uuid=visible.split(",")[index].removeprefix("GPU-"))
        nvml = gpus.torch_order[index]
        return SimpleNamespace(name=gpus.names[nvml], uuid=gpus.uuids[nvml].removeprefix("GPU-"))

    monkeypatch.setattr(torch.cuda, "get_device_properties", properties)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: properties(index).name)


# ---------------------------------------------------------------- in every process of a test

FAKE_COUNTERS = "GREENAI_FAKE_COUNTERS"


def counters_for_processes(cpu_watts: float = 40.0, dram_watts: float = 5.0) -> dict[str, str]:
    """The environment that gives every Python process a test starts (a sweep and its jobs)
    one fake RAPL counter: the same registers, on one clock (time.monotonic is the host's),
    each process with its own poller, as on a real host (tests/fake_site/sitecustomize.py)."""
    import json
    from pathlib import Path

    site = str(Path(__file__).parent / "fake_site")
    spec = {"t0": time.monotonic(), "cpu_watts": cpu_watts, "dram_watts": dram_watts}
    path = os.pathsep.join(p for p in (site, os.environ.get("PYTHONPATH", "")) if p)
    return {FAKE_COUNTERS: json.dumps(spec), "PYTHONPATH": path}


def install_in_process(spec: dict) -> None:
    """install() without pytest: for the whole life of a process started by a test."""
    import zeus.device
    import zeus.monitor.energy as monitor
    from zeus.device.gpu.common import ZeusGPUInitError

    cpus = RAPLCPUs(watts=spec["cpu_watts"], dram_watts=spec["dram_watts"], t0=spec["t0"])

    def no_gpus(ensure_homogeneous: bool = False):  # type: ignore[no-untyped-def]
        raise ZeusGPUInitError("no NVML here")

    for module in (zeus.device, monitor):
        module.get_gpus = no_gpus
        module.get_cpus = lambda: cpus
