"""Energy backends: which one is chosen, how each is labelled, and Zeus's silent zeros."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
import torch

from greenai import energy
from greenai.config import EnergyBackend, EnergyConfig
from greenai.energy import EstimateMeter, FallbackMeter, Measurement, Source, ZeusMeter, combined_source, make_meter
from greenai.errors import EnergyError

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


class FakeMonitor:
    """Stands in for zeus.monitor.ZeusMonitor, returning chosen readings."""

    def __init__(self, gpu_indices=None, cpu_indices=None, readings=None, **_):
        self.gpu_indices = [] if gpu_indices is None else gpu_indices
        self.cpu_indices = [0] if cpu_indices is None else cpu_indices
        self.readings = list(readings or [])

    def begin_window(self, key):
        self.started = time.perf_counter()

    def end_window(self, key):
        gpu, cpu = self.readings.pop(0)
        return SimpleNamespace(time=time.perf_counter() - self.started, gpu_energy=gpu, cpu_energy=cpu, dram_energy=None)


def fake_zeus(monkeypatch, **monitor_kw):
    import zeus.monitor

    monkeypatch.setattr(zeus.monitor, "ZeusMonitor", lambda **kw: FakeMonitor(**{**kw, **monitor_kw}))


def test_zeus_with_nothing_to_measure_is_refused_not_zeroed():
    # On this machine (no NVML GPU, no RAPL) Zeus would return 0 J for every window.
    with pytest.raises(EnergyError, match="no GPU .* and no readable CPU"):
        make_meter(EnergyConfig(backend=EnergyBackend.zeus), CPU)


def test_auto_falls_back_to_a_labelled_estimate_without_counters():
    meter = make_meter(EnergyConfig(backend=EnergyBackend.auto, watts_per_cpu_core=10.0), CPU)
    assert isinstance(meter, EstimateMeter) and meter.source is Source.estimated
    assert "estimate" in meter.description


def test_auto_uses_zeus_where_it_can_measure(monkeypatch):
    fake_zeus(monkeypatch, cpu_indices=[0], readings=[({}, {0: 12.5})])
    meter = make_meter(EnergyConfig(backend=EnergyBackend.auto), CPU)
    assert meter.source is Source.measured
    meter.begin("train")
    reading = meter.end("train")
    assert (reading.cpu_j, reading.gpu_j, reading.total_j, reading.source) == (12.5, None, 12.5, Source.measured)


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
    reading = meter.end("w")
    assert reading.total_j is None and reading.source is Source.off and reading.seconds >= 0


def test_a_long_zero_zeus_window_is_not_a_measurement(monkeypatch):
    fake_zeus(monkeypatch, cpu_indices=[0], readings=[({}, {0: 0.0})])
    meter = ZeusMeter(CPU)
    meter.begin("w")
    busy(energy.ZERO_READING_SECONDS + 0.05)
    with pytest.raises(EnergyError, match="not advancing"):
        meter.end("w")


def test_fallback_estimates_windows_zeus_cannot_read_and_labels_them(monkeypatch):
    fake_zeus(monkeypatch, cpu_indices=[0], readings=[({}, {0: 5.0}), ({}, {0: 0.0})])
    meter = FallbackMeter(ZeusMeter(CPU), EstimateMeter(10.0))
    meter.begin("a")
    first = meter.end("a")
    meter.begin("b")
    busy(energy.ZERO_READING_SECONDS + 0.05)
    second = meter.end("b")
    assert first.source is Source.measured and second.source is Source.estimated
    assert combined_source([first.source, second.source]) is Source.partial


def test_combined_source_labels():
    m, e, o = Source.measured, Source.estimated, Source.off
    assert combined_source([m, m]) is m
    assert combined_source([e]) is e
    assert combined_source([m, e]) is Source.partial
    assert combined_source([o]) is o and combined_source([]) is o


def test_measurement_total_adds_gpu_and_cpu():
    assert Measurement(1.0, 3.0, 2.0, Source.measured).total_j == 5.0
    assert Measurement(1.0, None, None, Source.off).total_j is None
