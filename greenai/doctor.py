"""`python -m greenai.doctor` (`greenai-doctor`): what can greenai measure here, and how well?

One screen, in well under 30 s: torch and CUDA, and whether torch can use the GPU the NVIDIA
driver shows; the device a run would train on (`--device`, as the runs' `device=`), its GPU found
by UUID as a run finds it; each counter Zeus can read (GPU via NVML, CPU packages and DRAM via RAPL); how
often the GPU counter moves, and how often windows of 10 ms to 1 s read zero on it; the idle
power; and the `energy=` setting to use. On a machine with nothing to read it says so and
names the estimate greenai falls back to.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from greenai.energy.counters import ZeusCounters, update_period
from greenai.energy.idle import cuda_context, measure_idle_power
from greenai.energy.meters import gpu_index
from greenai.errors import ConfigError
from greenai.training import devices

WINDOWS_MS = (10, 30, 100, 300, 1000)


@dataclass
class Findings:
    torch_version: str
    cuda_build: str | None
    torch_gpus: int
    nvml_gpus: int
    driver: str | None
    gpu_name: str | None = None
    components: tuple[str, ...] = ()
    counter_error: str | None = None
    period_s: float | None = None
    zero_share: dict[int, float] = field(default_factory=dict)  # window ms -> share of zero GPU readings
    idle_w: dict[str, float] = field(default_factory=dict)  # component -> watts
    idle_seconds: float = 0.0
    device: str = "cpu"  # the device a run with the doctor's device= would train on
    device_error: str | None = None
    context_w: float | None = None  # all components, a CUDA context held
    idle_settled: bool = True

    @property
    def gpu_unusable(self) -> bool:
        return self.nvml_gpus > 0 and self.torch_gpus == 0

    @property
    def recommendation(self) -> str:
        if self.gpu_unusable:
            return "fix torch first: the driver shows a GPU that torch cannot use (or train on the CPU with device=cpu)"
        if "gpu" in self.components:
            return "energy=zeus (or the default energy=auto): the GPU's counter is read for every window"
        if self.components:
            return (
                "energy=auto: Zeus reads the CPU's RAPL counters here; with no GPU counter, "
                "the figures cover the CPU packages" + (" and DRAM" if "dram" in self.components else "")
            )
        return (
            "energy=auto (it falls back to the estimate) or energy=estimate: Zeus has nothing to read here, "
            "so greenai estimates energy as process CPU-seconds x energy.watts_per_cpu_core, labelled estimated"
        )


def examine(scale: float = 1.0, device: str = "auto") -> Findings:
    """Everything `python -m greenai.doctor` reports, for the GPU a run with `device=` would
    train on (found by UUID, as a run finds it); `scale` shortens the probes (tests)."""
    torch_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    found = Findings(
        torch.__version__, torch.version.cuda, torch_gpus, devices.nvml_gpu_count(), devices.driver_version()
    )
    try:
        chosen = devices.pick_device(device)
    except ConfigError as exc:
        found.device_error = str(exc)
        chosen = torch.device("cpu")  # the CPU's counters may still be readable
    found.device = str(chosen)
    counters = ZeusCounters(gpu_index(chosen))
    found.counter_error = counters.unread.get("gpu")
    found.components = counters.components
    gpu = counters.gpu
    if gpu is not None:
        found.gpu_name = f"{gpu.name}, NVML GPU {gpu.index}"
        found.period_s = update_period(gpu.millijoules, timeout=1.0 * scale)
        found.zero_share = {ms: _zero_share(gpu.millijoules, ms / 1000 * scale) for ms in WINDOWS_MS}
    if found.components:
        idle = measure_idle_power(counters, 2.0 * scale, found.period_s, cuda_context(chosen))
        found.idle_w, found.idle_seconds = idle.components, idle.seconds
        found.context_w, found.idle_settled = idle.context_watts, idle.settled
    return found


def _zero_share(read: Callable[[], float], seconds: float) -> float:
    """Share of windows of `seconds` with nothing running that read zero on the counter."""
    windows = max(3, min(20, int(1.5 / max(seconds, 1e-3))))
    zeros = 0
    for _ in range(windows):
        before = read()
        time.sleep(seconds)
        zeros += read() == before
    return zeros / windows


def render(found: Findings) -> list[str]:
    lines = [
        f"torch {found.torch_version}, built for CUDA {found.cuda_build or '- (CPU build)'}; "
        f"torch sees {found.torch_gpus} GPU(s), the NVIDIA driver shows {found.nvml_gpus}"
        + (f" (driver {found.driver})" if found.driver else "")
    ]
    if found.gpu_unusable:
        lines.append(
            "  PROBLEM: the driver shows a GPU but torch cannot use it: install a torch build that matches the driver"
        )
    elif found.device_error:
        lines.append(f"  PROBLEM: {found.device_error}")
    lines.append(f"a run with these settings trains on {found.device}; its counters:")
    names = {
        "gpu": f"GPU energy counter (NVML{', ' + found.gpu_name if found.gpu_name else ''})",
        "cpu": "CPU package counters (RAPL)",
        "dram": "DRAM counters (RAPL)",
    }
    for component, label in names.items():
        lines.append(f"  {label}: {'readable' if component in found.components else 'not readable'}")
    if found.counter_error:
        lines.append(f"  ({found.counter_error})")
    if found.period_s is not None:
        lines.append(
            f"GPU counter moves every {found.period_s * 1000:.1f} ms (median); windows shorter than "
            f"{10 * found.period_s * 1000:.0f} ms are labelled approximate"
        )
    elif "gpu" in found.components:
        lines.append("GPU counter: fewer than three moves observed, update period unknown")
    if found.zero_share:
        shares = ", ".join(f"{ms} ms: {share:.0%}" for ms, share in found.zero_share.items())
        lines.append(f"share of idle windows that read 0 J on the GPU counter: {shares}")
    if found.idle_w:
        parts = ", ".join(f"{k} {w:.1f} W" for k, w in found.idle_w.items())
        settled = "" if found.idle_settled else ", NOT settled: the power kept changing"
        lines.append(f"idle power (no CUDA context, {found.idle_seconds:.1f} s, nothing running{settled}): {parts}")
    if found.context_w is not None:
        lines.append(f"with a CUDA context held, still no work: {found.context_w:.1f} W in all")
    lines.append(f"recommended: {found.recommendation}")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m greenai.doctor", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter probes (about 3 s instead of 10)")
    parser.add_argument("--device", default="auto", help="the device= of the runs to check (auto, cpu, cuda:N)")
    args = parser.parse_args(argv)
    for line in render(examine(0.3 if args.quick else 1.0, args.device)):
        print(line)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
