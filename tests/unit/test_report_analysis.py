"""The report's analysis functions on plain numbers."""

from __future__ import annotations

import pytest

from greenai.report import analysis as an
from greenai.stores.run_rows import TrialRow


def row(round_, acc, energy, state="finished", conv=None, relu=None):
    return TrialRow(
        f"r{round_}",
        f"run{round_}",
        round_,
        state,
        "FINISHED",
        acc,
        energy,
        1.0,
        "measured",
        conv_layers=conv,
        relu=relu,
    )


def test_convergence_counts_failed_rounds_and_their_energy():
    rows = [row(1, 0.5, 10), row(2, None, 7, "failed"), row(3, 0.8, 10), row(4, 0.79, 10, "pruned"), row(5, 0.81, 10)]
    curve = an.convergence(rows, tolerance=0.02)
    assert curve.best_so_far == [0.5, 0.5, 0.8, 0.8, 0.81]
    assert (curve.best, curve.round_best, curve.round_within) == (0.81, 5, 3)
    assert curve.energy_to_within == 27 and curve.energy_total == 47


def test_cheapest_within_margin():
    rows = [row(1, 0.90, 100), row(2, 0.895, 40), row(3, 0.87, 10)]
    best, cheap = an.cheapest_within(rows, 0.01)
    assert (best.round, cheap.round) == (1, 2)


def test_percent_per_added_layer_and_split():
    rows = [row(i, 0.8, e, conv=c) for i, (c, e) in enumerate([(1, 100), (1, 110), (2, 150), (4, 210)])]
    table = an.levels(rows, "conv_layers")
    assert [(lv.value, lv.count, lv.mean_energy) for lv in table] == [(1, 2, 105), (2, 1, 150), (4, 1, 210)]
    assert an.percent_per_added_layer(table) == pytest.approx((210 - 105) / 105 * 100 / 3)
    plus, minus = an.split_energy(table)
    assert [lv.value for lv in plus] == [4] and [lv.value for lv in minus] == [1]


def test_relu_change_is_on_against_off():
    rows = [row(1, 0.8, 100, relu=False), row(2, 0.8, 103, relu=True)]
    assert an.percent_per_added_layer(an.levels(rows, "relu")) == pytest.approx(3.0)


def test_eta_squared():
    assert an.eta_squared([[1, 1], [3, 3]]) == pytest.approx(1.0)
    assert an.eta_squared([[1, 3], [1, 3]]) == pytest.approx(0.0)
    # groups [1,2,3] and [4,5,6]: grand 3.5, SSB = 3*(1.5^2)*2 = 13.5, SST = 17.5
    assert an.eta_squared([[1, 2, 3], [4, 5, 6]]) == pytest.approx(13.5 / 17.5)
    assert an.eta_squared([[1, 2, 3]]) is None
    assert an.eta_squared([[1], [2], [3]]) is None, "one trial per level: undefined, not 1"


def test_carbon():
    assert an.kwh(3.6e6) == 1.0 and an.grams_co2e(7.2e6, 480) == 960.0
