"""Idle and context power, and net energy. Idle power is the devices' draw with no CUDA context
(read from the raw counters, no torch call), context power the draw with a context held and no
work; each waits for the power to hold still. Net = gross - idle power x time, per epoch and per
run; a net figure below zero is flagged, never clamped. Measured once per sweep, host and
devices (the GPU's UUID), whatever each process's counter period or description."""

from __future__ import annotations

import threading

import pytest
import torch
from fake_zeus import RAPLCPUs, SteppedGPUs, install

from greenai.config import EnergyBackend, EnergyConfig
from greenai.energy import meters
from greenai.energy.counters import ZeusCounters
from greenai.energy.idle import IdlePower, idle_power, measure_idle_power
from greenai.energy.meters import EstimateMeter, Measurement, OffMeter, Source, make_meter
from greenai.stores.sweep_folder import SweepFolder
from greenai.training.loop import EpochResult
from greenai.trial.figures import TrialFigures, epoch_metrics

CUDA0 = torch.device("cuda", 0)


@pytest.fixture(autouse=True)
def fresh_meters():
    meters._METERS.clear()
    yield
    meters._METERS.clear()


def epoch(n, train_j, train_s, eval_j, eval_s):
    return EpochResult(
        n,
        0.5,
        0.5,
        0.8,
        Measurement(train_s, train_j, None, Source.measured),
        Measurement(eval_s, eval_j, None, Source.measured),
    )


# ---------------------------------------------------------------- net energy


def test_net_energy_per_epoch_and_per_run_subtracts_the_idle_power_not_the_contexts():
    idle = IdlePower(watts=10.0, source=Source.measured, seconds=3.0, context_watts=16.0)
    figures = TrialFigures(train_images=100, idle=idle, accuracies=[0.8])
    figures.epochs += [epoch(1, 100.0, 2.0, 20.0, 0.5), epoch(2, 120.0, 3.0, 30.0, 1.0)]
    assert epoch_metrics(figures.epochs[0], idle)["epoch_net_energy_j"] == 100.0 - 10.0 * 2.0
    assert epoch_metrics(figures.epochs[1], idle)["epoch_net_energy_j"] == 120.0 - 10.0 * 3.0
    metrics = figures.metrics()
    assert metrics["energy_j"] == 270.0 and metrics["idle_power_w"] == 10.0 and metrics["context_power_w"] == 16.0
    assert metrics["train_net_energy_j"] == 220.0 - 10.0 * 5.0
    assert metrics["net_energy_j"] == 270.0 - 10.0 * 6.5 and metrics["net_energy_negative"] == 0.0
    assert metrics["idle_settled"] == 1.0


def test_a_net_energy_below_zero_is_flagged_not_clamped():
    figures = TrialFigures(train_images=10, idle=IdlePower(100.0, Source.measured, 3.0), accuracies=[0.5])
    figures.epochs.append(epoch(1, 50.0, 1.0, 5.0, 0.5))
    metrics = figures.metrics()
    assert metrics["net_energy_j"] == 55.0 - 100.0 * 1.5 and metrics["net_energy_negative"] == 1.0


def test_no_idle_measurement_no_net_figures():
    figures = TrialFigures(train_images=10, accuracies=[0.5])
    figures.epochs.append(epoch(1, 10.0, 1.0, 1.0, 0.1))
    assert "net_energy_j" not in figures.metrics() and "epoch_net_energy_j" not in epoch_metrics(figures.epochs[0])


# ---------------------------------------------------------------- measuring idle and context power


def test_idle_is_read_with_no_cuda_context_and_context_power_once_one_is_held(monkeypatch):
    gpus = SteppedGPUs(watts=77.0, period=0.01)
    install(monkeypatch, gpus=gpus)
    meter = make_meter(EnergyConfig(backend=EnergyBackend.zeus), CUDA0)
    idle = idle_power(meter, 0.3, open_context=lambda: gpus.hold_context(118.0))
    assert idle.watts == pytest.approx(77.0, rel=0.05) and idle.context_watts == pytest.approx(118.0, rel=0.05)
    assert idle.settled and idle.source is Source.measured


def test_idle_waits_for_the_gpus_clocks_to_settle(monkeypatch):
    # Still clocked up from earlier work, stepping down by ~6.5 % every 0.1 s for 1 s from the
    # first read on: any three sub-windows (0.1 s each at least) before it ends span more than 5 %.
    steps = (140.0, 131.0, 123.0, 115.0, 107.0, 100.0, 94.0, 88.0, 82.0, 77.0)
    gpus = SteppedGPUs(watts=150.0, period=0.01).steps_from_first_read(*steps, every=0.1)
    install(monkeypatch, gpus=gpus)
    idle = measure_idle_power(ZeusCounters(0), 0.3)
    assert idle.settled and idle.watts == pytest.approx(77.0, rel=0.05), "it waited for the power to hold still"


def test_cpu_idle_is_measured_after_the_rapl_readers_started(monkeypatch):
    # Starting Zeus's RAPL poller (a spawned process) draws 30 W more while it starts (0.8 s).
    rapl = RAPLCPUs(watts=40.0, dram_watts=5.0).readers_cost(30.0, 0.8)
    install(monkeypatch, cpus=rapl)
    try:
        idle = measure_idle_power(ZeusCounters(None), 0.3)
    finally:
        rapl.stop_readers()
    assert idle.watts == pytest.approx(45.0, rel=0.05) and idle.components.keys() == {"cpu", "dram"}
    assert idle.context_watts is None, "no GPU: no context to hold"


def test_power_that_never_holds_still_is_labelled_unsettled(monkeypatch):
    # A power that climbs 2 % every 10 ms for 10 s: no two sub-windows agree, however long they last.
    ramp = [50.0 * 1.02**i for i in range(1, 1000)]
    install(monkeypatch, gpus=SteppedGPUs(watts=50.0, period=0.01).steps_from_first_read(*ramp, every=0.01))
    idle = measure_idle_power(ZeusCounters(0), 0.15)
    assert not idle.settled


def test_idle_is_keyed_by_the_gpus_uuid_so_every_process_reads_one_measurement(monkeypatch, tmp_path):
    gpus = SteppedGPUs(watts=[77.0, 90.0], period=0.01, torch_order=[0, 1])
    install(monkeypatch, gpus=gpus)
    folder = SweepFolder(tmp_path)
    first = make_meter(EnergyConfig(backend=EnergyBackend.zeus), CUDA0)
    a = idle_power(first, 0.2, folder)
    meters._METERS.clear()
    second = make_meter(EnergyConfig(backend=EnergyBackend.zeus), CUDA0)
    second.description += " (another process: its counter period read 21 ms)"
    b = idle_power(second, 0.2, folder)
    assert a == b and len(folder.host_measurements("idle")) == 1, "one measurement per host and GPU"
    other = make_meter(EnergyConfig(backend=EnergyBackend.zeus), torch.device("cuda", 1))
    c = idle_power(other, 0.2, folder)
    assert c.watts == pytest.approx(90.0, rel=0.05) and len(folder.host_measurements("idle")) == 2


def test_concurrent_jobs_wait_for_one_measurement(monkeypatch, tmp_path):
    install(monkeypatch, gpus=SteppedGPUs(watts=77.0, period=0.01))
    meter = make_meter(EnergyConfig(backend=EnergyBackend.zeus), CUDA0)
    measured = []
    real = meter.counters.read

    def counted():
        measured.append(threading.get_ident())
        return real()

    meter.counters.read = counted
    results = [None] * 4

    def job(i):
        results[i] = idle_power(meter, 0.2, SweepFolder(tmp_path))

    threads = [threading.Thread(target=job, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(measured)) == 1, "one job measured, the others waited for its file"
    assert len({r.watts for r in results}) == 1


def test_estimate_and_off_have_no_idle_to_measure():
    assert idle_power(EstimateMeter(10.0), 3.0) == IdlePower(0.0, Source.estimated, 0.0)
    assert idle_power(OffMeter(), 3.0) is None
