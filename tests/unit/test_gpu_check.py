"""benchmarks/gpu_check.py's ledger check: it prints a sweep's ledger and fails loudly when
more than 1 % of the counters' energy is unexplained, or when there is no counter to check."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import gpu_check  # noqa: E402

CLOSED = {
    "ledger_total_j": 10_000.0,
    "ledger_trials_j": 9_300.0,
    "ledger_overhead_j": 400.0,
    "ledger_idle_j": 250.0,
    "ledger_uncovered_seconds": 2.1,
    "ledger_unexplained_j": 50.0,
    "ledger_unexplained_pct": 0.5,
}


def test_a_ledger_within_one_percent_passes_and_prints_every_term():
    line, ok = gpu_check.ledger_check(CLOSED)
    assert ok
    assert line == (
        "ledger: counters 10000 J = trials 9300 J + overhead 400 J + idle between 250 J (est., 2.1 s) "
        "+ unexplained 50 J (+0.50 %, ok)"
    )


def test_a_ledger_over_one_percent_fails_loudly():
    line, ok = gpu_check.ledger_check({**CLOSED, "ledger_unexplained_j": -150.0, "ledger_unexplained_pct": -1.5})
    assert not ok and "(-1.50 %, OVER the 1 % limit)" in line


def test_an_estimate_is_never_passed_off_as_a_reading():
    estimated = {k: v for k, v in CLOSED.items() if k not in ("ledger_total_j", "ledger_unexplained_pct")}
    line, ok = gpu_check.ledger_check(estimated)
    assert not ok and line.startswith("ledger: NO independent counter (energy estimated)")
    assert gpu_check.ledger_check({}) == ("ledger: none on the sweep's run", False)
