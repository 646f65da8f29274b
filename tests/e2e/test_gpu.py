"""On a real NVIDIA GPU: Zeus's counters read, short windows add up, idle power is plausible,
packed trials' energy adds up to what the GPU drew. Marked `gpu`: skipped without a CUDA GPU,
run by benchmarks/gpu-check.sh where there is one."""

from __future__ import annotations

import time

import pytest
import torch

from greenai.config import EnergyBackend, EnergyConfig
from greenai.energy import meters as energy
from greenai.energy.attribution import Window, attribute
from greenai.energy.counters import ZeusCounters
from greenai.energy.idle import idle_power
from greenai.energy.meters import Source, make_meter

pytestmark = pytest.mark.gpu


@pytest.fixture
def cuda():
    energy._METERS.clear()
    yield torch.device("cuda", 0)
    energy._METERS.clear()


def load(device: torch.device, seconds: float) -> None:
    """Matrix products on the GPU for about `seconds`."""
    a = torch.randn(4096, 4096, device=device)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        a = (a @ a).tanh_()
    torch.cuda.synchronize(device)


def test_zeus_measures_the_training_gpu(cuda):
    meter = make_meter(EnergyConfig(backend=EnergyBackend.zeus), cuda)
    assert meter.source is Source.measured and meter.components.startswith("gpu")
    meter.begin("w")
    load(cuda, 1.5)
    reading = meter.end("w")
    watts = reading.gpu_j / reading.seconds
    assert 30 < watts < 1500, f"{watts:.0f} W under load"
    assert meter.primary.period is not None, "the counter's update period was observed"
    assert reading.approximate == (reading.seconds < energy.APPROXIMATE_STEPS * meter.primary.period)


def short_load(device: torch.device, seconds: float) -> None:
    """Small products, each waited for: the window lasts about `seconds` of GPU work."""
    a = torch.randn(1024, 1024, device=device)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        a = (a @ a).tanh_()
        torch.cuda.synchronize(device)


def test_back_to_back_short_windows_add_up_to_one_long_reading(cuda):
    meter = make_meter(EnergyConfig(backend=EnergyBackend.zeus), cuda)
    counters = ZeusCounters(0, cpus=False)
    start = counters.read()
    parts = []
    for _ in range(300):  # ~3 ms windows, far shorter than the counter's steps
        meter.begin("short")
        short_load(cuda, 0.003)
        parts.append(meter.end("short"))
    end = counters.read()
    whole = end.minus(start)["gpu"]
    # The windows miss what the GPU drew between them (greenai's reads); bound that at 1 kW.
    between = (end.time - start.time) - sum(p.seconds for p in parts)
    step = (meter.primary.period or 0.1) * 1000  # one counter step at up to 1 kW
    assert sum(p.gpu_j for p in parts) == pytest.approx(whole, abs=2 * step + 1000 * between)
    assert all(p.approximate for p in parts) and any(p.gpu_j == 0 for p in parts)


def test_idle_power_is_plausible(cuda):
    idle = idle_power(make_meter(EnergyConfig(backend=EnergyBackend.zeus), cuda), 2.0)
    assert idle.source is Source.measured and 10 < idle.watts < 600


def test_idle_with_no_cuda_context_and_with_one_held_in_a_fresh_process():
    """This test process holds a CUDA context already: the doctor measures both in its own."""
    import re
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "greenai.doctor", "--quick"], capture_output=True, text=True, timeout=120, check=True
    )
    out = proc.stdout + proc.stderr
    idle = float(re.search(r"idle power \(no CUDA context.*?gpu ([\d.]+) W", out).group(1))
    context = float(re.search(r"with a CUDA context held, still no work: ([\d.]+) W", out).group(1))
    assert 10 < idle < 600 and 10 < context < 1000, out
    assert context >= 0.95 * idle, f"a context held draws no less than none: {idle} W, {context} W"
    assert "already hold a CUDA context" not in out, "nothing held a context during the idle window"


def test_packed_windows_on_the_real_counter_add_up_to_what_the_gpu_drew(cuda):
    counters = ZeusCounters(0, cpus=False)
    readings, windows = [counters.read()], []
    for trial in range(3):  # three "trials", interleaved windows
        begin = counters.read()
        load(cuda, 0.2 * (trial + 1))
        end = counters.read()
        readings += [begin, end]
        windows.append(Window(trial, begin.time, end.time))
    readings.append(counters.read())
    result = attribute(windows, readings)
    attributed = sum(s.joules["gpu"] for s in result.windows.values())
    assert attributed + result.overhead.joules.get("gpu", 0.0) == pytest.approx(result.total.joules["gpu"])
    assert result.windows[2].joules["gpu"] > result.windows[0].joules["gpu"], "the longest load drew the most"


def _train_twice(device: torch.device, fused: bool) -> list[torch.Tensor]:
    """Weights after two epochs of the same seeded training, twice, with deterministic=true."""
    from greenai.config import ModelName
    from greenai.energy.meters import OffMeter
    from greenai.training import devices, fusion, models
    from greenai.training.data import DeviceData
    from greenai.training.loop import Hyperparameters, fit, make_optimizer

    devices.set_deterministic(True)
    spec = models.ArchitectureSpec(ModelName.simplecnn, (1, 28, 28), conv_layers=2, linear_layers=3)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2048, 1, 28, 28, generator=generator)
    y = torch.randint(0, 10, (2048,), generator=generator)
    data = DeviceData(x.to(device), y.to(device), x[:512].to(device), y[:512].to(device), "random")
    hp = Hyperparameters(1e-3, 0.9, 0.999, 1e-8, 0.0)
    weights = []
    for _ in range(2):
        if fused:
            group = fusion.FusedGroup(spec, [fusion.Member(s, hp) for s in (1, 2, 3)], device)
            fusion.fit_group(group, data, epochs=2, batch_size=128, meter=OffMeter())
            weights.append(torch.cat([p.detach().flatten() for p in group.model.parameters()]).cpu())
        else:
            torch.manual_seed(1)
            net = models.build(spec).to(device)
            fit(net, make_optimizer(net, hp), data, epochs=2, batch_size=128, seed=1, meter=OffMeter())
            weights.append(torch.cat([p.detach().flatten() for p in net.parameters()]).cpu())
    devices.set_deterministic(False)
    return weights


@pytest.mark.parametrize("fused", [False, True])
def test_deterministic_training_gives_identical_weights(cuda, fused):
    first, second = _train_twice(cuda, fused)
    assert torch.equal(first, second), "deterministic=true: the same seed gives bit-identical weights"
