"""The cumulative energy counters Zeus reads: a GPU's NVML energy counter, the CPU packages'
and DRAM's RAPL counters.

Meters measure windows through Zeus's `ZeusMonitor`; this module reads the counters
themselves, through Zeus's device layer (`zeus.device.get_gpus`, `get_cpus`), where a window
is not the right tool: the idle power, the shared timeline of trials packed onto one GPU (each
worker reads the same global counter at its own boundaries), the sweep's ledger, and
`python -m greenai.doctor`'s probe of how often the GPU counter moves.

- **Which GPU.** torch numbers the GPUs its own way (fastest first, within
  CUDA_VISIBLE_DEVICES); Zeus numbers them as NVML does (PCI order) and parses
  CUDA_VISIBLE_DEVICES as integers only. So the training GPU is found by its UUID: torch's
  `get_device_properties(i).uuid` against NVML's UUID of each GPU Zeus lists. A GPU that
  matches none is refused with one line; a MIG instance is refused too (NVML's counter covers
  the whole GPU, which other instances share).
- **RAPL wraps.** A RAPL register counts up to its range (about 262 kJ) and restarts at zero.
  Zeus adds the wrap-arounds its poller (one per process, polling every second) has seen since
  that process's first read, so two processes' readings differ by whole ranges. greenai keeps
  RAPL readings as the register's own value (Zeus's reading modulo the range: the same in every
  process) and counts a wrap where a reading falls by more than half a range (`since`).
- **Per component.** A component that cannot be read (no NVML, no RAPL permission, a RAPL file
  that vanished) is recorded in `unread` with why; the others are read on.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from greenai.errors import EnergyError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reading:
    """Cumulative joules by counter ("gpu", "cpu:0", "dram:0", ...) at `time` (time.monotonic()).
    RAPL counters hold their register's value, which wraps (see `since`)."""

    time: float
    joules: dict[str, float]

    def minus(self, earlier: Reading, wraps: Mapping[str, float] | None = None) -> dict[str, float]:
        """Joules drawn since `earlier`, by counter; `wraps`: the RAPL counters' ranges in J."""
        wraps = wraps or {}
        return {k: since(earlier.joules.get(k, v), v, wraps.get(k)) for k, v in self.joules.items()}


def since(before: float, after: float, wrap: float | None = None) -> float:
    """Joules between two reads of one counter. A read below the earlier one is a RAPL counter
    that wrapped (it fell by more than half its range `wrap`), or two processes' reads crossing
    by microseconds, out of their timestamps' order: nothing was drawn between them."""
    delta = after - before
    if delta >= 0:
        return delta
    if wrap is not None and -delta > wrap / 2:
        return delta + wrap
    return 0.0


def by_component(joules: Mapping[str, float]) -> dict[str, float]:
    """Counters summed by component: "cpu:0" + "cpu:1" -> "cpu"."""
    summed: dict[str, float] = {}
    for key, value in joules.items():
        part = key.split(":")[0]
        summed[part] = summed.get(part, 0.0) + value
    return summed


@dataclass(frozen=True)
class Gpu:
    """The training GPU as Zeus lists it: `index` in Zeus's list, torch's index, UUID, name."""

    gpus: Any  # zeus.device.gpu.GPUs
    index: int
    torch_index: int
    uuid: str
    name: str

    def millijoules(self) -> int:
        return self.gpus.get_total_energy_consumption(self.index)

    def processes(self) -> list[int] | None:
        """The pids holding a CUDA context on the GPU (NVML's compute processes; None where
        NVML cannot say)."""
        import pynvml

        try:
            handle = self.gpus.gpus[self.index].handle
            return [p.pid for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle)]
        except Exception:  # an old driver, a GPU Zeus reaches through its daemon
            return None


class ZeusCounters:
    """The counters of one GPU (torch's CUDA index `gpu_index`, found by UUID) and of every
    readable CPU package. A component that cannot be read is left out, with why in `unread`."""

    def __init__(self, gpu_index: int | None, cpus: bool = True) -> None:
        self.unread: dict[str, str] = {}
        self.gpu: Gpu | None = None
        if gpu_index is not None:
            try:
                self.gpu = find_gpu(gpu_index)
            except EnergyError as exc:
                self.unread["gpu"] = str(exc)
        self.cpus = _cpus(self.unread) if cpus else None
        self.cpu_indices = list(range(len(self.cpus))) if self.cpus is not None else []
        self.dram = bool(self.cpu_indices) and all(
            self.cpus.supports_get_dram_energy_consumption(i) for i in self.cpu_indices
        )
        self.wraps = _wrap_ranges(self.cpus, self.cpu_indices, self.dram)

    @property
    def components(self) -> tuple[str, ...]:
        found = ("gpu",) if self.gpu is not None else ()
        if self.cpu_indices:
            found += ("cpu", "dram") if self.dram else ("cpu",)
        return found

    @property
    def key(self) -> str:
        """What the counters are on this host: the GPU by UUID (or none), and whether RAPL is read."""
        gpu = f"gpu-{self.gpu.uuid}" if self.gpu is not None else "no-gpu"
        return f"{gpu}-{'rapl' if self.cpu_indices else 'no-rapl'}"

    def read(self) -> Reading:
        """Every readable counter now. A RAPL read that fails drops the CPU counters (one log
        line) and the GPU's reading goes on; a GPU read that fails raises."""
        joules: dict[str, float] = {}
        if self.gpu is not None:
            joules["gpu"] = self.gpu.millijoules() / 1000.0
        if self.cpu_indices:
            try:
                joules.update(self._read_cpus())
            except Exception as exc:  # Zeus's RAPL and daemon errors, OSError: the GPU is still read
                self.drop_cpus(exc)
        return Reading(time.monotonic(), joules)

    def _read_cpus(self) -> dict[str, float]:
        joules: dict[str, float] = {}
        for index in self.cpu_indices:
            measured = self.cpus.get_total_energy_consumption(index)
            joules[f"cpu:{index}"] = self._register(f"cpu:{index}", measured.cpu_mj / 1000.0)
            if self.dram and measured.dram_mj is not None:
                joules[f"dram:{index}"] = self._register(f"dram:{index}", measured.dram_mj / 1000.0)
        return joules

    def _register(self, key: str, joules: float) -> float:
        """The RAPL register's own value: Zeus's reading less the wraps this process counted."""
        wrap = self.wraps.get(key)
        return joules % wrap if wrap else joules

    def wait_for_readers(self, timeout: float = 10.0, still: float = 0.1) -> bool:
        """Wait until Zeus's RAPL pollers (a Python process per RAPL file, spawned at this
        process's first read) have started: their CPU time holds still for `still` seconds.
        Their start-up (an interpreter, Zeus's imports) would otherwise read as CPU idle power.
        Whether they did within `timeout` (True where there is none to wait for)."""
        pids = self.reader_pids()
        deadline = time.monotonic() + timeout
        last = [_cpu_ticks(pid) for pid in pids]
        while pids and time.monotonic() < deadline:
            time.sleep(still)
            now = [_cpu_ticks(pid) for pid in pids]
            if now == last:
                return True
            last = now
        return not pids

    def reader_pids(self) -> list[int]:
        """The pids of Zeus's RAPL pollers of this process, once started."""
        pids = []
        for index in self.cpu_indices:
            cpu = self.cpus.cpus[index] if hasattr(self.cpus, "cpus") else None
            for rapl in (getattr(cpu, "rapl_file", None), getattr(cpu, "dram", None)):
                process = getattr(getattr(rapl, "_wraparound_tracker", None), "process", None)
                if getattr(process, "pid", None) is not None:
                    pids.append(process.pid)
        return pids

    def drop_cpus(self, exc: BaseException) -> None:
        """Stop reading RAPL after a failure, saying so once."""
        reason = f"{type(exc).__name__}: {exc}"
        log.warning("energy: the CPU's RAPL counters failed (%s); they are no longer read, the GPU's still is", reason)
        self.unread["cpu"] = reason
        self.cpu_indices, self.dram = [], False


def _cpu_ticks(pid: int) -> int | None:
    """A process's CPU time so far, in clock ticks (None once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])  # utime, stime


def _quiet_zeus() -> None:
    # Zeus logs its device probing (and a missing AMD library) every time: greenai states the
    # outcome in one line of its own instead.
    logging.getLogger("zeus").setLevel(logging.WARNING)
    logging.getLogger("zeus.device.gpu.amd").setLevel(logging.ERROR)


def _gpus():  # type: ignore[no-untyped-def]
    """Zeus's GPUs, all of them in NVML's order: CUDA_VISIBLE_DEVICES is hidden from Zeus while
    it lists them (it parses integers only, and refuses MIG names), since greenai finds the
    training GPU by UUID. torch has read the variable already (find_gpu asks torch first)."""
    _quiet_zeus()
    from zeus.device import get_gpus

    hidden = os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    try:
        return get_gpus()
    except Exception as exc:  # Zeus raises its own init errors, and ValueError for bad device lists
        raise EnergyError(f"Zeus cannot reach the GPU's counters ({type(exc).__name__}: {exc})") from exc
    finally:
        if hidden is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = hidden


def _plain_uuid(uuid: object) -> str:
    """A UUID as torch and NVML both can be compared by: lower-case hex, no GPU-/MIG- prefix."""
    text = uuid.decode() if isinstance(uuid, bytes) else str(uuid)
    text = text.strip().lower()
    for prefix in ("gpu-", "mig-"):
        text = text.removeprefix(prefix)
    return text


def torch_uuid(torch_index: int) -> str:
    import torch

    try:
        uuid = getattr(torch.cuda.get_device_properties(torch_index), "uuid", None)
    except Exception as exc:  # no driver, no such GPU: CUDA's own errors
        raise EnergyError(f"torch cannot describe GPU {torch_index} ({type(exc).__name__}: {exc})") from exc
    if uuid is None:
        raise EnergyError(f"torch gives no UUID for GPU {torch_index}, so its NVML counter cannot be matched to it")
    return _plain_uuid(uuid)


def _nvml_uuid(gpus: Any, index: int) -> str | None:
    import pynvml

    try:
        return _plain_uuid(pynvml.nvmlDeviceGetUUID(gpus.gpus[index].handle))
    except Exception:  # a GPU Zeus lists but NVML cannot name (or not an NVIDIA GPU)
        return None


def _mig_parent(gpus: Any, uuid: str) -> int | None:
    """The index of the GPU one of whose MIG instances has `uuid` (None if none has)."""
    import pynvml

    for index in range(len(gpus)):
        try:
            handle = gpus.gpus[index].handle
            for slot in range(pynvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
                try:
                    mig = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
                except pynvml.NVMLError:
                    continue
                if _plain_uuid(pynvml.nvmlDeviceGetUUID(mig)) == uuid:
                    return index
        except Exception:  # no MIG support here: not a MIG instance of this GPU
            continue
    return None


def find_gpu(torch_index: int) -> Gpu:
    """torch's GPU `torch_index` in Zeus's list, matched by UUID; its counter read once."""
    uuid = torch_uuid(torch_index)
    gpus = _gpus()
    index = next((i for i in range(len(gpus)) if _nvml_uuid(gpus, i) == uuid), None)
    if index is None:
        parent = _mig_parent(gpus, uuid)
        if parent is not None:
            raise EnergyError(
                f"GPU {torch_index} is a MIG instance of NVML GPU {parent}: NVML's energy counter covers the whole "
                "GPU, which other instances share, so greenai does not measure MIG instances"
            )
        raise EnergyError(
            f"torch's GPU {torch_index} (UUID {uuid}) matches none of the {len(gpus)} GPU(s) NVML shows, "
            "so its energy counter cannot be found"
        )
    if not gpus.supports_get_total_energy_consumption(index):
        raise EnergyError(f"GPU {torch_index} has no energy counter (NVML needs a Volta or newer GPU)")
    import torch

    gpu = Gpu(gpus, index, torch_index, uuid, torch.cuda.get_device_name(torch_index))
    try:
        gpu.millijoules()
    except Exception as exc:  # a virtual GPU without the counter says so only when read
        raise EnergyError(
            f"GPU {torch_index}'s NVML energy counter cannot be read ({type(exc).__name__}: {exc})"
        ) from exc
    return gpu


def _cpus(unread: dict[str, str]):  # type: ignore[no-untyped-def]
    _quiet_zeus()
    from zeus.device import get_cpus

    try:
        return get_cpus()
    except Exception as exc:  # no RAPL, no permission to read it, a RAPL file that cannot be read
        unread["cpu"] = f"{type(exc).__name__}: {exc}"
        return None


def _wrap_ranges(cpus: Any, indices: list[int], dram: bool) -> dict[str, float]:
    """Each RAPL counter's range in joules, where Zeus's RAPL files say it (a Zeus daemon's
    readings come without one: the daemon is the one reader of the host, and counts wraps)."""
    ranges: dict[str, float] = {}
    for index in indices:
        cpu = cpus.cpus[index] if hasattr(cpus, "cpus") else None
        for key, rapl in (
            (f"cpu:{index}", getattr(cpu, "rapl_file", None)),
            (f"dram:{index}", getattr(cpu, "dram", None)),
        ):
            if key.startswith("dram") and not dram:
                continue
            top = getattr(rapl, "max_energy_range_uj", None)
            if top:
                ranges[key] = float(top) / 1e6
    return ranges


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
