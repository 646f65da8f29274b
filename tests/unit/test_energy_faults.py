"""Every error after the meter is built falls back per component, with one log line and no
traceback: RAPL failing (a file that cannot be read, a Zeus daemon that stops answering) leaves
the GPU's counter measuring; a GPU counter failing estimates the windows it cannot read."""

from __future__ import annotations

import logging
import time

import pytest
import torch
from fake_zeus import RAPLCPUs, SteppedGPUs, install
from zeus.device.cpu.rapl import ZeusRAPLFileInitError
from zeus.device.exception import ZeusdError
from zeus.device.gpu.common import ZeusGPUUnknownError

from greenai.config import EnergyBackend, EnergyConfig
from greenai.energy import meters
from greenai.energy.meters import FallbackMeter, Source, make_meter

CUDA0 = torch.device("cuda", 0)


@pytest.fixture(autouse=True)
def fresh_meters():
    meters._METERS.clear()
    yield
    meters._METERS.clear()


def windows(meter, count: int, seconds: float = 0.05):
    readings = []
    for _ in range(count):
        meter.begin("train")
        time.sleep(seconds)
        readings.append(meter.end("train"))
    return readings


def warnings_in(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize(
    "error",
    [
        ZeusRAPLFileInitError("Error reading package energy"),
        ZeusdError("cpu_energy_uj is null in response"),
        OSError(5, "I/O error"),
    ],
    ids=["rapl-file", "zeusd", "oserror"],
)
def test_rapl_failing_mid_run_leaves_the_gpu_measuring_with_one_log_line(monkeypatch, caplog, error):
    rapl = RAPLCPUs(watts=40.0)
    install(monkeypatch, gpus=SteppedGPUs(watts=100.0, period=0.01), cpus=rapl)
    meter = make_meter(EnergyConfig(backend=EnergyBackend.zeus), CUDA0)
    assert meter.components == "gpu+cpu+dram"
    before = windows(meter, 2)
    rapl.fail = error
    after = windows(meter, 3)
    assert all(r.cpu_j is not None for r in before) and all(r.cpu_j is None for r in after)
    assert all(r.source is Source.measured for r in after), "the GPU's counter goes on measuring"
    assert all(r.gpu_j == pytest.approx(100.0 * r.seconds, abs=2.0) for r in after)
    said = warnings_in(caplog)
    assert len(said) == 1 and "RAPL counters failed" in said[0] and type(error).__name__ in said[0]
    assert "cpu" in meter.counters.unread


def test_a_rapl_file_unreadable_when_zeus_starts_leaves_the_gpu_measured(monkeypatch):
    # Zeus's ZeusMonitor lets this error escape its constructor even for a monitor of the GPU only.
    install(
        monkeypatch,
        gpus=SteppedGPUs(watts=100.0, period=0.01),
        cpus_error=lambda: ZeusRAPLFileInitError("Error reading package name"),
    )
    meter = make_meter(EnergyConfig(backend=EnergyBackend.auto), CUDA0)
    assert isinstance(meter, FallbackMeter) and meter.components == "gpu"
    (reading,) = windows(meter, 1)
    assert reading.source is Source.measured and reading.gpu_j == pytest.approx(100.0 * reading.seconds, abs=2.0)


def test_a_gpu_counter_failing_mid_run_is_estimated_said_once(monkeypatch, caplog):
    gpus = SteppedGPUs(watts=100.0, period=0.01)
    install(monkeypatch, gpus=gpus)
    meter = make_meter(EnergyConfig(backend=EnergyBackend.zeus), CUDA0)
    gpus.fail = ZeusGPUUnknownError("GPU is lost")
    readings = windows(meter, 3)
    assert all(r.source is Source.estimated for r in readings), "each window it cannot read is estimated"
    said = warnings_in(caplog)
    assert len(said) == 1 and "ZeusGPUUnknownError" in said[0], said
