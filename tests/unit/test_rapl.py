"""RAPL's wrap-arounds: a register that restarts at zero past its range, and Zeus's per-process
poller that counts them late (it looks once a second) and only from its own first read. Every
process's readings agree (greenai keeps the register's own value and counts wraps between
readings), and a window Zeus misread by a wrap is re-derived and labelled, never accepted."""

from __future__ import annotations

import time

import pytest
from fake_zeus import RAPLCPUs, SteppedGPUs, install

from greenai.energy.attribution import Window, attribute
from greenai.energy.counters import ZeusCounters, by_component
from greenai.energy.meters import ZeusMeter, rederive

WRAP = 1000.0  # joules: a small range, so that a test sees wraps (RAPL's real one is ~262 kJ)


def wait_until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the event never came"
        time.sleep(0.005)


def near_the_top(seconds: float = 1.0, watts: float = 40.0) -> RAPLCPUs:
    """A package register `seconds` of `watts` below its range; the poller looks only when told."""
    return RAPLCPUs(watts=watts, dram_watts=5.0, wrap_j=WRAP, start_j=WRAP - watts * seconds, poll=None)


def test_a_window_ending_in_the_pollers_gap_after_a_wrap_is_re_derived(monkeypatch):
    # The package sits 2 J below the top, drawing nothing, until the test starts the load.
    rapl = RAPLCPUs(watts=0.0, dram_watts=5.0, wrap_j=WRAP, start_j=WRAP - 2.0, poll=None)
    install(monkeypatch, cpus=rapl)
    meter = ZeusMeter(gpu_index=None)
    start = rapl.package.joules() + rapl.dram_power.joules()
    meter.begin("a")
    rapl.package.set_watts(40.0)
    wait_until(lambda: rapl.wrapped() == 1)
    first = meter.end("a")  # the poller has not looked: Zeus reads about -1000 J
    meter.begin("b")  # still in the gap
    rapl.look()  # the poller counts the wrap, which happened before window b began
    second = meter.end("b")  # Zeus reads about +1000 J
    drawn = rapl.package.joules() + rapl.dram_power.joules() - start
    for reading in (first, second):
        assert reading.rederived, "a window Zeus misread by a wrap is labelled"
        assert 0.0 <= reading.cpu_j <= 45.0 * reading.seconds + 0.5
    assert first.cpu_j + second.cpu_j == pytest.approx(drawn, abs=0.5), "the two windows hold what was drawn"


def test_windows_zeus_reads_right_are_kept_as_read():
    assert rederive(12.5, 1.0, WRAP) == (12.5, False)
    assert rederive(-990.0, 1.0, WRAP) == (pytest.approx(10.0), True)
    assert rederive(1010.0, 1.0, WRAP) == (pytest.approx(10.0), True)
    assert rederive(-5.0, 1.0, None) == (-5.0, False), "no range known: left for the caller to refuse"


def test_processes_started_on_either_side_of_a_wrap_read_the_same_counter(monkeypatch):
    early = near_the_top(seconds=0.5)
    install(monkeypatch, cpus=early)
    first = ZeusCounters(None)
    before = first.read()  # the early process's poller starts here
    wait_until(lambda: early.wrapped() == 1)
    early.look()  # it has counted the wrap: Zeus's reading in that process is now ~1000 J higher
    late = early.another_process()
    install(monkeypatch, cpus=late)
    second = ZeusCounters(None)
    from_late = second.read()  # the late process's poller starts after the wrap: it counts none
    from_early = first.read()
    assert abs(from_early.joules["cpu:0"] - from_late.joules["cpu:0"]) < 1.0, "both read the register"
    later = second.read()
    wrap = first.wraps
    # A packed trial's window in the late process, attributed with the early process's readings.
    result = attribute([Window("late", from_late.time, later.time)], [before, from_early, from_late, later], wrap)
    elapsed = later.time - before.time
    assert by_component(result.total.joules)["cpu"] == pytest.approx(40.0 * elapsed, abs=1.0)
    assert by_component(result.windows["late"].joules)["cpu"] == pytest.approx(
        40.0 * (later.time - from_late.time), abs=1.0
    )


def test_the_cpu_figures_go_on_across_wraps_beside_the_gpus(monkeypatch):
    rapl = near_the_top(seconds=0.3, watts=400.0)
    install(monkeypatch, gpus=SteppedGPUs(watts=100.0, period=0.01), cpus=rapl)
    meter = ZeusMeter(gpu_index=0)
    readings = []
    while rapl.wrapped() < 2:  # 2.5 s a wrap at 400 W
        meter.begin("w")
        time.sleep(0.05)
        readings.append(meter.end("w"))
        rapl.look()
    assert all(r.cpu_j == pytest.approx(405.0 * r.seconds, abs=1.0) for r in readings)
    assert all(r.gpu_j == pytest.approx(100.0 * r.seconds, abs=2.0) for r in readings)
