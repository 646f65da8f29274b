"""A window never outlives its trial: an exception inside a measurement window (a CUDA
out-of-memory error, a store that fails in the epoch hook) cancels it, so the next trial in the
same process (the in-process launchers share one meter per process) measures its own windows."""

from __future__ import annotations

import time

import pytest
from fake_zeus import SteppedGPUs, install
from trials_in_memory import SIMPLECNN, memory_data, trial

from greenai.config import EnergyBackend, EnergyConfig
from greenai.energy import meters
from greenai.energy.meters import FallbackMeter, Source, make_meter
from greenai.training import loop
from greenai.training.fusion import alone_model
from greenai.trial.outcome import Failed, Finished
from greenai.trial.runner import run_alone

CUDA = __import__("torch").device("cuda", 0)


@pytest.fixture
def zeus_meter(monkeypatch):
    """The meter an in-process launcher's trials share (make_meter caches one per process)."""
    meters._METERS.clear()
    install(monkeypatch, gpus=SteppedGPUs(watts=100.0, period=0.01))
    meter = make_meter(EnergyConfig(backend=EnergyBackend.zeus), CUDA)
    assert isinstance(meter, FallbackMeter)
    yield meter
    meters._METERS.clear()


def out_of_memory_after(seconds: float):
    def train_epoch(*args, **kwargs):
        time.sleep(seconds)  # the trial's work before the error, inside the open window
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    return train_epoch


def test_an_error_inside_a_window_leaves_the_next_trials_figures_its_own(zeus_meter, monkeypatch):
    data = memory_data()
    with monkeypatch.context() as patch:
        patch.setattr(loop, "train_epoch", out_of_memory_after(0.5))
        failed = run_alone(trial(zeus_meter, data, seed=1))
    assert isinstance(failed, Failed) and "out of memory" in str(failed.error)

    start = time.monotonic()
    second = trial(zeus_meter, data, seed=2)
    outcome = run_alone(second)
    wall = time.monotonic() - start
    assert isinstance(outcome, Finished)
    window = second.record.figures.epochs[0].train
    assert window.source is Source.measured, "the next trial's window is measured, not estimated"
    assert window.seconds <= wall, "the next trial's first window lies within the next trial"
    assert window.gpu_j == pytest.approx(100.0 * window.seconds, abs=2 * 100.0 * 0.01)


def test_a_window_zeus_failed_to_open_is_estimated_never_read_from_an_older_one(zeus_meter):
    zeus_meter.primary.begin("train")  # an older window of that name, left open by someone
    time.sleep(0.2)
    zeus_meter.begin("train")  # Zeus refuses: the name is taken
    reading = zeus_meter.end("train")
    assert reading.source is Source.estimated and reading.seconds < 0.2


@pytest.mark.parametrize("backend", [EnergyBackend.zeus, EnergyBackend.estimate, EnergyBackend.off])
def test_an_exception_inside_a_window_cancels_it_on_every_meter(zeus_meter, backend):
    meter = make_meter(EnergyConfig(backend=backend), CUDA)
    with pytest.raises(RuntimeError, match="out of memory"):
        with meters.window(meter, "train"):
            raise RuntimeError("CUDA out of memory")
    with meters.window(meter, "train") as again:  # the name is free: a new window opens
        time.sleep(0.01)
    assert again.taken.seconds < 0.5 and again.taken.source is meter.source


def test_an_error_in_the_epoch_hook_cancels_the_records_window_around_it(zeus_meter):
    def failing_store(results):
        raise OSError("the tracking store went away")

    net = alone_model(SIMPLECNN, 1)
    optimizer = loop.make_optimizer(net, loop.Hyperparameters(1e-3, 0.9, 0.999, 1e-8, 0.0))
    with pytest.raises(OSError):
        loop.fit(
            net, optimizer, memory_data(), epochs=1, batch_size=40, seed=1, meter=zeus_meter, on_epoch=failing_store
        )
    assert not zeus_meter.primary.open_windows(), "no window is left open by the error"
