"""Idle power and net energy: net = gross - idle power x time, per epoch and per run."""

from __future__ import annotations

import threading
import time

import pytest

from greenai.energy.idle import IdlePower, idle_power
from greenai.energy.meters import EstimateMeter, Measurement, OffMeter, Source
from greenai.stores.sweep_folder import SweepFolder
from greenai.training.loop import EpochResult
from greenai.trial.figures import TrialFigures, epoch_metrics


class CountingMeter:
    """A counter-backed meter stand-in drawing a fixed power: 50 W."""

    source = Source.measured
    description = "fake 50 W device"

    def __init__(self):
        self.windows = 0
        self.started = {}

    def begin(self, name):
        self.started[name] = time.perf_counter()

    def end(self, name):
        self.windows += 1
        seconds = time.perf_counter() - self.started.pop(name)
        return Measurement(seconds, 50.0 * seconds, None, Source.measured)


def epoch(n, train_j, train_s, eval_j, eval_s):
    return EpochResult(
        n,
        0.5,
        0.5,
        0.8,
        Measurement(train_s, train_j, None, Source.measured),
        Measurement(eval_s, eval_j, None, Source.measured),
    )


def test_net_energy_per_epoch_and_per_run():
    idle = IdlePower(watts=10.0, source=Source.measured, seconds=3.0)
    figures = TrialFigures(train_images=100, idle=idle, accuracies=[0.8])
    figures.epochs += [epoch(1, 100.0, 2.0, 20.0, 0.5), epoch(2, 120.0, 3.0, 30.0, 1.0)]
    assert epoch_metrics(figures.epochs[0], idle)["epoch_net_energy_j"] == 100.0 - 10.0 * 2.0
    assert epoch_metrics(figures.epochs[1], idle)["epoch_net_energy_j"] == 120.0 - 10.0 * 3.0
    metrics = figures.metrics()
    assert metrics["energy_j"] == 270.0 and metrics["idle_power_w"] == 10.0
    assert metrics["train_net_energy_j"] == 220.0 - 10.0 * 5.0
    assert metrics["net_energy_j"] == 270.0 - 10.0 * 6.5


def test_no_idle_measurement_no_net_figures():
    figures = TrialFigures(train_images=10, accuracies=[0.5])
    figures.epochs.append(epoch(1, 10.0, 1.0, 1.0, 0.1))
    assert "net_energy_j" not in figures.metrics() and "epoch_net_energy_j" not in epoch_metrics(figures.epochs[0])


def test_idle_power_is_measured_in_a_quiet_window_after_a_throwaway_one():
    meter = CountingMeter()
    idle = idle_power(meter, seconds=0.3)
    assert idle.watts == pytest.approx(50.0) and idle.source is Source.measured and idle.seconds >= 0.3
    assert meter.windows == 2, "a throw-away window first, then the measured one"


def test_idle_power_is_measured_once_per_sweep_and_shared(tmp_path):
    first, second = CountingMeter(), CountingMeter()
    folder = SweepFolder(tmp_path)
    a = idle_power(first, 0.2, folder)
    b = idle_power(second, 0.2, folder)
    assert (first.windows, second.windows) == (2, 0), "the second job reads the first one's measurement"
    assert a == b and len(folder.host_measurements("idle")) == 1


def test_concurrent_jobs_wait_for_one_measurement(tmp_path):
    meters = [CountingMeter() for _ in range(4)]
    results = [None] * 4

    def job(i):
        results[i] = idle_power(meters[i], 0.3, SweepFolder(tmp_path))

    threads = [threading.Thread(target=job, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(m.windows for m in meters) == 2 and len({r.watts for r in results}) == 1


def test_estimate_and_off_have_no_idle_to_measure():
    assert idle_power(EstimateMeter(10.0), 3.0) == IdlePower(0.0, Source.estimated, 0.0)
    assert idle_power(OffMeter(), 3.0) is None
    assert idle_power(CountingMeter(), 0.0) is None
