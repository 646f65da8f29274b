"""The right GPU, every time: the training GPU's counter is found by UUID (torch and NVML
number GPUs differently, and Zeus reads CUDA_VISIBLE_DEVICES as integers only), a GPU that
cannot be matched or measured (a MIG instance, a virtual GPU without a counter) is refused in
one line under energy=zeus and left out, with the CPU's counters kept, under energy=auto; the
doctor probes the GPU a run would use; CUDA_VISIBLE_DEVICES="" means the CPU."""

from __future__ import annotations

import time

import pytest
import torch
from fake_zeus import RAPLCPUs, SteppedGPUs, install, install_nvml

from greenai import doctor
from greenai.config import EnergyBackend, EnergyConfig
from greenai.energy import meters
from greenai.energy.meters import EstimateMeter, FallbackMeter, make_meter
from greenai.errors import ConfigError, EnergyError
from greenai.training import devices

CUDA0 = torch.device("cuda", 0)
ZEUS, AUTO = EnergyConfig(backend=EnergyBackend.zeus), EnergyConfig(backend=EnergyBackend.auto)


@pytest.fixture(autouse=True)
def fresh_meters():
    meters._METERS.clear()
    yield
    meters._METERS.clear()


def watts(meter) -> float:
    meter.begin("w")
    time.sleep(0.3)
    reading = meter.end("w")
    return reading.gpu_j / reading.seconds


def test_torch_and_nvml_numbering_the_gpus_differently_the_meter_reads_torchs_gpu(monkeypatch):
    # torch's GPU 0 is NVML's GPU 1 (torch orders fastest first, NVML by PCI bus).
    install(monkeypatch, gpus=SteppedGPUs(watts=[300.0, 60.0], period=0.01, torch_order=[1, 0]))
    meter = make_meter(ZEUS, CUDA0)
    assert watts(meter) == pytest.approx(60.0, rel=0.15), "the training GPU's joules, not NVML GPU 0's"
    assert "NVML GPU 1" in meter.description


def test_cuda_visible_devices_holding_a_uuid_is_measured_through_zeuss_own_gpu_list(monkeypatch):
    gpus = SteppedGPUs(watts=[300.0, 60.0], period=0.01)
    install_nvml(monkeypatch, gpus)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", gpus.uuids[1])  # Zeus alone would raise ValueError on it
    meter = make_meter(ZEUS, CUDA0)
    assert watts(meter) == pytest.approx(60.0, rel=0.15)
    assert meter.counters.gpu.index == 1


def test_a_mig_instance_is_refused_in_one_line_under_zeus(monkeypatch):
    gpus = SteppedGPUs(period=0.01)
    install_nvml(monkeypatch, gpus, migs={0: ["MIG-5e1c0000-1111-2222-3333-444455556666"]})
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-5e1c0000-1111-2222-3333-444455556666")
    with pytest.raises(EnergyError) as caught:
        make_meter(ZEUS, CUDA0)
    message = str(caught.value)
    assert "MIG instance of NVML GPU 0" in message and "whole GPU" in message and "\n" not in message


def test_a_mig_instance_under_auto_keeps_measuring_the_cpus_rapl(monkeypatch):
    gpus = SteppedGPUs(period=0.01)
    mig = "MIG-5e1c0000-1111-2222-3333-444455556666"
    install_nvml(monkeypatch, gpus, migs={0: [mig]}, cpus=RAPLCPUs(watts=40.0, dram_watts=5.0))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", mig)
    meter = make_meter(AUTO, CUDA0)
    assert isinstance(meter, FallbackMeter) and meter.components == "cpu+dram"
    assert "gpu not measured" in meter.description and "MIG" in meter.description
    meter.begin("w")
    time.sleep(0.2)
    reading = meter.end("w")
    assert reading.gpu_j is None and reading.cpu_j == pytest.approx(45.0 * reading.seconds, rel=0.1)


def test_a_gpu_torch_and_nvml_cannot_match_is_refused_in_one_line(monkeypatch):
    install(monkeypatch, gpus=SteppedGPUs(period=0.01))
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: type("P", (), {"uuid": "0badc0de"}))
    with pytest.raises(EnergyError, match=r"GPU 0 \(UUID 0badc0de\) matches none of the 1 GPU\(s\) NVML shows"):
        make_meter(ZEUS, CUDA0)
    assert isinstance(make_meter(AUTO, CUDA0), EstimateMeter), "nothing else to read here: the estimate"


def test_a_virtual_gpu_without_the_counter_is_refused_under_zeus_and_left_out_under_auto(monkeypatch):
    from zeus.device.gpu.common import ZeusGPUNotSupportedError

    gpus = SteppedGPUs(period=0.01)
    gpus.fail = ZeusGPUNotSupportedError("Not Supported")
    install(monkeypatch, gpus=gpus, cpus=RAPLCPUs())
    with pytest.raises(EnergyError, match=r"NVML energy counter cannot be read \(ZeusGPUNotSupportedError"):
        make_meter(ZEUS, CUDA0)
    meters._METERS.clear()
    assert make_meter(AUTO, CUDA0).components == "cpu+dram", "the CPU's counters are still read"


def test_the_doctor_probes_the_gpu_a_run_would_use(monkeypatch):
    install(monkeypatch, gpus=SteppedGPUs(watts=[300.0, 60.0], period=0.01, count=2, torch_order=[1, 0]))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(devices, "nvml_gpu_count", lambda: 2)
    found = doctor.examine(scale=0.3)
    assert found.device == "cuda" and found.gpu_name.endswith("NVML GPU 1")
    assert found.idle_w["gpu"] == pytest.approx(60.0, rel=0.15), "device=auto trains on torch's GPU 0: NVML's 1"
    other = doctor.examine(scale=0.3, device="cuda:1")
    assert other.idle_w["gpu"] == pytest.approx(300.0, rel=0.15)


def test_gpus_hidden_with_an_empty_cuda_visible_devices_mean_the_cpu_not_a_driver_problem(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "nvml_gpu_count", lambda: 1)  # NVML ignores CUDA_VISIBLE_DEVICES
    assert devices.pick_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match=r"^device=cuda: CUDA_VISIBLE_DEVICES='' hides every GPU; unset it"):
        devices.pick_device("cuda")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    with pytest.raises(ConfigError, match="cannot use them"):
        devices.pick_device("auto")
