"""Energy attribution for trials packed onto one GPU: synthetic timelines, hand-computed answers."""

from __future__ import annotations

import math

import pytest

from greenai.energy.attribution import Window, attribute
from greenai.energy.counters import Reading
from greenai.energy.meters import Source
from greenai.sweep.packing import _figures, _windows


def readings(*points: tuple[float, float]) -> list[Reading]:
    return [Reading(t, {"gpu": j}) for t, j in points]


def test_two_trials_one_busy_10_s_one_100_s():
    # 200 W while both run (0-10 s), 100 W while only the long one runs (10-100 s).
    windows = [Window("short", 0.0, 10.0), Window("long", 0.0, 100.0)]
    result = attribute(windows, readings((0.0, 0.0), (10.0, 2000.0), (100.0, 11000.0)))
    assert result.windows["short"].joules["gpu"] == pytest.approx(1000.0)  # half of the shared 10 s
    assert result.windows["long"].joules["gpu"] == pytest.approx(1000.0 + 9000.0)  # half, then all of its tail
    assert result.windows["short"].seconds == pytest.approx(5.0) and result.windows["long"].seconds == pytest.approx(
        95.0
    )
    assert result.overhead.joules == {} and result.total.joules["gpu"] == pytest.approx(11000.0)


def test_time_with_no_trial_active_is_overhead_charged_to_nobody():
    # Batch from 0 to 12 s; one trial busy 2-10 s; 60 W throughout.
    windows = [Window("a", 2.0, 10.0)]
    result = attribute(windows, readings((0.0, 0.0), (2.0, 120.0), (10.0, 600.0), (12.0, 720.0)))
    assert result.windows["a"].joules["gpu"] == pytest.approx(480.0)
    assert result.overhead.joules["gpu"] == pytest.approx(240.0) and result.overhead.seconds == pytest.approx(4.0)
    attributed = sum(s.joules["gpu"] for s in result.windows.values())
    assert attributed + result.overhead.joules["gpu"] == pytest.approx(result.total.joules["gpu"])


def test_three_staggered_trials_share_each_interval_among_those_active():
    windows = [Window("a", 0.0, 4.0), Window("b", 2.0, 6.0), Window("c", 4.0, 6.0)]
    # 0-2 a alone (100 J), 2-4 a+b (300 J), 4-6 b+c (200 J)
    result = attribute(windows, readings((0.0, 0.0), (2.0, 100.0), (4.0, 400.0), (6.0, 600.0)))
    assert result.windows["a"].joules["gpu"] == pytest.approx(100.0 + 150.0)
    assert result.windows["b"].joules["gpu"] == pytest.approx(150.0 + 100.0)
    assert result.windows["c"].joules["gpu"] == pytest.approx(100.0)


def test_reads_out_of_order_by_microseconds_never_give_negative_energy():
    windows = [Window("a", 0.0, 2.0), Window("b", 1.0, 2.0)]
    # b read the counter at t=1.0 just before a's read at t=1.000001 saw a (lower) earlier value.
    points = [
        Reading(0.0, {"gpu": 0.0}),
        Reading(1.0, {"gpu": 50.0}),
        Reading(1.000001, {"gpu": 49.0}),
        Reading(2.0, {"gpu": 150.0}),
    ]
    result = attribute(windows, points)
    assert all(v >= 0 for s in result.windows.values() for v in s.joules.values())
    assert sum(s.joules["gpu"] for s in result.windows.values()) == pytest.approx(150.0)


def test_every_component_is_attributed_by_the_same_rule():
    windows = [Window("a", 0.0, 1.0), Window("b", 0.0, 1.0)]
    result = attribute(windows, [Reading(0.0, {"gpu": 0.0, "cpu": 0.0}), Reading(1.0, {"gpu": 300.0, "cpu": 40.0})])
    assert result.windows["a"].joules == {"gpu": 150.0, "cpu": 20.0}


def test_a_trials_timeline_becomes_its_per_epoch_and_final_figures():
    # One trial, two epochs; each window's attributed share given: train 30 J, eval 3 J per epoch.
    idle = {"watts": 10.0, "context_watts": 14.0, "source": "measured", "seconds": 3.0}
    lines = [{"event": "note", "train_images": 100, "idle": idle}]
    shares = {}
    t = 0.0
    lines += [
        {"event": "begin", "window": "setup", "n": 1, "t": t, "j": {}},
        {"event": "end", "window": "setup", "n": 1, "t": t + 1.0, "j": {}},
    ]
    shares[(7, "setup", 1)] = type("S", (), {"joules": {"gpu": 2.0}, "seconds": 0.5})()
    t += 1.0
    for step in (1, 2):
        for window, joules in (("train", 30.0), ("eval", 3.0), ("records", 1.0)):
            lines += [
                {"event": "begin", "window": window, "n": step, "t": t, "j": {}},
                {"event": "end", "window": window, "n": step, "t": t + 1.0, "j": {}},
            ]
            shares[(7, window, step)] = type("S", (), {"joules": {"gpu": joules}, "seconds": 0.5})()
            t += 1.0
    assert [w.key for w in _windows({7: lines})][:3] == [(7, "setup", 1), (7, "train", 1), (7, "eval", 1)]
    figures, per_epoch = _figures(7, lines, shares)
    final = figures.metrics()
    assert final["train_energy_j"] == pytest.approx(60.0) and final["eval_energy_j"] == pytest.approx(6.0)
    assert final["trial_overhead_energy_j"] == pytest.approx(2 * 1.0 + 2.0), "its records and its model's set-up"
    assert final["energy_j"] == pytest.approx(70.0), "every window of its life"
    assert final["energy_per_train_sample_j"] == pytest.approx(60.0 / 200)
    # Idle power is charged for the trial's share of the time (0.5 s per window), not the window's 1 s.
    assert final["net_energy_j"] == pytest.approx(70.0 - 10.0 * 0.5 * 7) and final["context_power_w"] == 14.0
    assert per_epoch[2]["epoch_energy_j"] == pytest.approx(30.0) and per_epoch[2][
        "epoch_net_energy_j"
    ] == pytest.approx(25.0)
    assert figures.source is Source.attributed and math.isnan(figures.epochs[0].test_accuracy)
