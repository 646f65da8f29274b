"""`python -m greenai.doctor`: what can be measured here, and how well."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from fake_zeus import RAPLCPUs, SteppedGPUs, install
from machine import with_counters, without_counters

from greenai import doctor
from greenai.training import devices


@pytest.fixture
def fake_gpu_host(monkeypatch):
    """One GPU that torch and the driver both see, its NVML counter stepping every 20 ms."""
    gpus = SteppedGPUs(watts=120.0, period=0.02)
    install(monkeypatch, gpus=gpus)
    # Creating the CUDA context the doctor measures with: the GPU draws 160 W from then on.
    monkeypatch.setattr(doctor, "cuda_context", lambda device: lambda: gpus.hold_context(160.0))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(devices, "nvml_gpu_count", lambda: 1)
    monkeypatch.setattr(devices, "driver_version", lambda: "580.159")


def test_on_a_gpu_host_it_measures_the_counters_period_zero_windows_and_idle_power(fake_gpu_host):
    found = doctor.examine(scale=0.3)
    assert found.components == ("gpu",) and found.gpu_name == "Fake H100, NVML GPU 0"
    assert found.period_s == pytest.approx(0.02, rel=0.3)
    # 3 ms windows (10 ms x 0.3) mostly miss the 20 ms steps; 300 ms windows never do.
    assert found.zero_share[10] >= 0.5 and found.zero_share[1000] == 0.0
    assert found.idle_w["gpu"] == pytest.approx(120.0, rel=0.15), "idle: no CUDA context"
    assert found.context_w == pytest.approx(160.0, rel=0.15), "then with one held"
    lines = doctor.render(found)
    assert any(line.startswith("with a CUDA context held, still no work: 1") for line in lines)
    assert any(line.startswith("GPU counter moves every 2") for line in lines)
    assert lines[-1].startswith("recommended: energy=zeus")


def test_rapl_without_a_gpu_says_what_the_figures_cover(monkeypatch):
    install(monkeypatch, cpus=RAPLCPUs())
    monkeypatch.setattr(devices, "nvml_gpu_count", lambda: 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    found = doctor.examine(scale=0.1)
    assert found.components == ("cpu", "dram") and not found.zero_share
    assert "CPU packages and DRAM" in doctor.render(found)[-1]


def test_a_gpu_torch_cannot_use_is_named_as_the_problem(monkeypatch):
    install(monkeypatch, gpus=SteppedGPUs())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "nvml_gpu_count", lambda: 1)
    monkeypatch.setattr(devices, "driver_version", lambda: "470.82")
    lines = doctor.render(doctor.examine(scale=0.1))
    assert any("PROBLEM: the driver shows a GPU but torch cannot use it" in line for line in lines)
    assert lines[-1].startswith("recommended: fix torch first")


def doctor_here() -> tuple[str, list[str]]:
    """`python -m greenai.doctor --quick` on this machine: its output, and its lines."""
    proc = subprocess.run(
        [sys.executable, "-m", "greenai.doctor", "--quick"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("torch ") and lines[-1].startswith("recommended: ") and len(lines) <= 20
    return proc.stdout, lines


@without_counters
def test_where_nothing_can_be_read_the_command_names_the_estimate_in_one_screen():
    out, lines = doctor_here()
    assert "  CPU package counters (RAPL): not readable" in out and "estimate" in lines[-1]


@with_counters
def test_where_counters_can_be_read_the_command_names_them_in_one_screen():
    out, _ = doctor_here()
    found_gpu = "GPU energy counter (NVML" in out and "readable" in out
    assert found_gpu or "CPU package counters (RAPL): readable" in out
