"""Energy backends: which one is chosen, how each is labelled, Zeus's stepped counters and its
silent zeros and constructor errors, reproduced on this machine with Zeus's device layer faked."""

from __future__ import annotations

import time

import pytest
import torch
from fake_zeus import RAPLCPUs, SteppedGPUs, install, install_nvml
from machine import with_counters, without_counters

from greenai.config import EnergyBackend, EnergyConfig
from greenai.energy import meters as energy
from greenai.energy.meters import (
    EstimateMeter,
    FallbackMeter,
    Measurement,
    Source,
    ZeusMeter,
    combined_source,
    make_meter,
)
from greenai.errors import ConfigError, EnergyError
from greenai.training import devices

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def fresh_meters():
    energy._METERS.clear()
    yield
    energy._METERS.clear()


def busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        sum(range(1000))


# ---------------------------------------------------------------- choosing the backend (real Zeus)


@without_counters
def test_zeus_is_refused_with_one_line_where_it_has_nothing_to_read():
    # Here Zeus would return 0 J for every window.
    with pytest.raises(EnergyError, match=r"^energy=zeus: .*no GPU .* and no readable CPU .*use energy=auto"):
        make_meter(EnergyConfig(backend=EnergyBackend.zeus), CPU)


@with_counters
def test_zeus_and_auto_measure_where_zeus_has_counters():
    assert make_meter(EnergyConfig(backend=EnergyBackend.zeus), CPU).source is Source.measured
    assert make_meter(EnergyConfig(backend=EnergyBackend.auto), CPU).source is Source.measured


@without_counters
def test_auto_falls_back_to_a_labelled_estimate_without_counters():
    meter = make_meter(EnergyConfig(backend=EnergyBackend.auto, watts_per_cpu_core=10.0), CPU)
    assert isinstance(meter, EstimateMeter) and meter.source is Source.estimated
    assert "estimate" in meter.description and meter.components == "cpu-time estimate"


def test_auto_uses_zeus_where_it_can_measure(monkeypatch):
    install(monkeypatch, cpus=RAPLCPUs(watts=40.0, dram_watts=5.0))
    meter = make_meter(EnergyConfig(backend=EnergyBackend.auto), CPU)
    assert meter.source is Source.measured and meter.components == "cpu+dram"
    meter.begin("train")
    busy(0.2)
    reading = meter.end("train")
    assert reading.gpu_j is None and reading.cpu_j == pytest.approx(45.0 * reading.seconds, rel=0.1)


# ---------------------------------------------------------------- NVML's stepped counter


def test_back_to_back_short_windows_add_up_to_the_counter_within_one_step(monkeypatch):
    gpus = SteppedGPUs(watts=120.0, period=0.02)
    install(monkeypatch, gpus=gpus)
    meter = ZeusMeter(gpu_index=0)
    assert meter.period == pytest.approx(0.02, rel=0.3), "the counter's update period is observed"
    start = time.monotonic()
    readings = []
    for _ in range(100):  # windows of ~3 ms: most read 0 J, some a whole 2.4 J step
        meter.begin("eval")
        busy(0.003)
        readings.append(meter.end("eval"))
    elapsed = time.monotonic() - start
    steps = {round(r.gpu_j, 6) for r in readings}
    assert steps <= {0.0, 2.4, 4.8}, "each short window reads 0 J or whole steps"
    # Back to back, the windows telescope: they add up to the counter over their own time, to a
    # step at either end, give or take what the (machine-paced) gaps between them drew.
    inside = sum(r.seconds for r in readings)
    gaps = elapsed - inside
    assert sum(r.gpu_j for r in readings) == pytest.approx(120.0 * inside, abs=2 * 2.4 + 120.0 * gaps)
    assert gaps < 0.5 * elapsed, "the windows were back to back"
    assert all(r.approximate for r in readings) and all(r.source is Source.measured for r in readings)


def test_a_window_of_many_counter_periods_is_not_approximate(monkeypatch):
    install(monkeypatch, gpus=SteppedGPUs(watts=120.0, period=0.01))
    meter = ZeusMeter(gpu_index=0)
    meter.begin("train")
    busy(energy.APPROXIMATE_STEPS * 0.01 * 1.5)
    reading = meter.end("train")
    assert not reading.approximate and reading.gpu_j == pytest.approx(120.0 * reading.seconds, abs=1.2)


def test_a_long_zero_window_is_not_a_measurement(monkeypatch):
    install(monkeypatch, gpus=SteppedGPUs(watts=0.0, period=0.01))  # a counter that does not advance
    meter = ZeusMeter(gpu_index=0)
    meter.begin("w")
    busy(energy.ZERO_READING_SECONDS + 0.05)
    with pytest.raises(EnergyError, match="not advancing"):
        meter.end("w")


def test_fallback_estimates_windows_zeus_cannot_read_and_labels_them(monkeypatch):
    gpus = SteppedGPUs(watts=120.0, period=0.01)
    install(monkeypatch, gpus=gpus)
    meter = FallbackMeter(ZeusMeter(gpu_index=0), EstimateMeter(10.0))
    meter.begin("a")
    busy(0.05)
    first = meter.end("a")
    gpus.watts = 0.0  # the counter stops (from its next step): the next long window reads 0 J
    time.sleep(2 * gpus.period)
    meter.begin("b")
    busy(energy.ZERO_READING_SECONDS + 0.05)
    second = meter.end("b")
    assert first.source is Source.measured and second.source is Source.estimated
    assert combined_source([first.source, second.source]) is Source.partial


# ---------------------------------------------------------------- Zeus failing to start


@pytest.fixture
def driver_gone(monkeypatch):
    """Zeus's own NVIDIAGPUs, with NVML's library answering that the driver is not loaded:
    Zeus raises its ZeusGPUDriverNotLoadedError from get_gpus."""
    import pynvml

    install_nvml(monkeypatch, SteppedGPUs())

    def not_loaded():
        raise pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)

    monkeypatch.setattr(pynvml, "nvmlInit", not_loaded)


def test_a_zeus_constructor_error_falls_back_to_the_estimate_under_auto(driver_gone):
    meter = make_meter(EnergyConfig(backend=EnergyBackend.auto), torch.device("cuda", 0))
    assert isinstance(meter, EstimateMeter)


def test_a_zeus_constructor_error_is_one_line_under_zeus(driver_gone):
    with pytest.raises(EnergyError) as caught:
        make_meter(EnergyConfig(backend=EnergyBackend.zeus), torch.device("cuda", 0))
    message = str(caught.value)
    assert message.startswith("energy=zeus: Zeus found no GPU (NVML) and no readable CPU (RAPL) counters here")
    assert "Zeus cannot reach the GPU's counters (ZeusGPUDriverNotLoadedError" in message and "\n" not in message


def test_a_gpu_the_driver_shows_but_torch_cannot_use_stops_with_one_line(monkeypatch):
    monkeypatch.setattr(devices, "nvml_gpu_count", lambda: 1)
    monkeypatch.setattr(devices, "driver_version", lambda: "535.54")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(
        ConfigError, match=r"^device=auto: the NVIDIA driver shows 1 GPU\(s\) .* torch .* cannot use them"
    ):
        devices.pick_device("auto")
    assert devices.pick_device("cpu") == CPU, "device=cpu still trains on the CPU"


# ---------------------------------------------------------------- labels and shares


def test_estimate_is_cpu_seconds_times_watts_per_core():
    meter = EstimateMeter(watts_per_cpu_core=20.0)
    meter.begin("w")
    cpu0 = time.process_time()
    busy(0.3)
    cpu_used = time.process_time() - cpu0
    reading = meter.end("w")
    assert reading.source is Source.estimated and reading.gpu_j is None
    assert reading.cpu_j == pytest.approx(20.0 * cpu_used, rel=0.2)
    assert reading.seconds >= 0.3


def test_off_measures_time_only():
    meter = make_meter(EnergyConfig(backend=EnergyBackend.off), CPU)
    meter.begin("w")
    time.sleep(0.05)
    reading = meter.end("w")
    assert reading.total_j is None and reading.source is Source.off and reading.seconds >= 0.05


def test_combined_source_labels():
    m, e, o, f = Source.measured, Source.estimated, Source.off, Source.fused
    assert combined_source([m, m]) is m
    assert combined_source([e]) is e
    assert combined_source([m, e]) is Source.partial
    assert combined_source([f, f]) is f
    assert combined_source([o]) is o and combined_source([]) is o
    assert Source.fused_estimated.is_estimated and Source.partial.is_estimated and not Source.fused.is_estimated


def test_a_share_splits_energy_and_charged_time_and_keeps_the_estimate_label():
    window = Measurement(2.0, 80.0, 20.0, Source.measured)
    part = window.share(4)
    assert (part.gpu_j, part.cpu_j, part.total_j, part.seconds, part.charged) == (20.0, 5.0, 25.0, 2.0, 0.5)
    assert part.source is Source.fused
    assert Measurement(1.0, None, 8.0, Source.estimated).share(2).source is Source.fused_estimated


def test_measurement_total_adds_gpu_and_cpu():
    assert Measurement(1.0, 3.0, 2.0, Source.measured).total_j == 5.0
    assert Measurement(1.0, None, None, Source.off).total_j is None
