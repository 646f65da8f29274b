"""Energy attribution for trials packed onto one GPU."""

from __future__ import annotations

import pytest

from greenai.sweep.packing import attribute, window_meter


def test_shares_follow_busy_time_and_add_up_to_the_window():
    shares = attribute(300.0, [1.0, 2.0, 3.0])
    assert shares == pytest.approx([50.0, 100.0, 150.0]) and sum(shares) == pytest.approx(300.0)


def test_no_busy_time_means_equal_shares():
    assert attribute(90.0, [0.0, 0.0, 0.0]) == [30.0, 30.0, 30.0]


def test_one_trial_per_gpu_needs_no_window():
    assert window_meter(1) is None
