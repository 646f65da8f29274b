"""A sweep's energy ledger: every joule the devices drew during the sweep, accounted for.

The sweeping process reads the devices' cumulative counters when the sweep starts and ends
(and every POLL_SECONDS between, so that a RAPL register's wrap-around is never missed): an
independent reading, which no trial's arithmetic touches. Against it the ledger sets what the
sweep's own parts say they drew, each from its own readings:

- **trials**: each trial's gross energy (`energy_j`: its windows of training, evaluation, and
  its records between epochs), over its life from its first window to its last;
- **overhead**: greenai's own work outside any trial's life, measured too: each trial's
  start-up (preparing it: idle figure read, data loaded, study linked), the opening of its
  MLflow run, its close (final figures, the study told), and the sweeper's work between launches;
- **idle between**: the time nothing above covers (processes starting, Hydra's launching)
  times the power the devices draw then: the context power where one was measured (the
  sweeping process holds a CUDA context from its measurement on), else the idle power. This
  term is an estimate (a power times a time), and the only one.

The **unexplained** remainder, total - trials - overhead - idle between, says how well the
parts add up: a share lost (a pruned member's joules never recorded), counted twice, or read
from the wrong GPU shows there. Where there is no counter to read (the CPU estimate) the
ledger has no independent total and says so.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from greenai.energy.attribution import cumulative
from greenai.energy.counters import Reading, ZeusCounters, by_component

POLL_SECONDS = 30.0  # a RAPL range (~262 kJ) takes minutes to wrap even at 1,000 W
TRIAL, OVERHEAD = "trial", "overhead"


class CounterReader:
    """The sweep's independent reading: the counters read at the start, at `mark()`, at the end
    and every `poll` seconds between (by a thread), totals counted from the start."""

    def __init__(self, counters: ZeusCounters, poll: float = POLL_SECONDS) -> None:
        self.counters, self.poll = counters, poll
        self._readings = [counters.read()]
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keep_reading, name="greenai-ledger", daemon=True)
        self._thread.start()

    @property
    def started(self) -> float:
        return self._readings[0].time

    def _keep_reading(self) -> None:
        while not self._stop.wait(self.poll):
            self.mark()

    def mark(self) -> Reading:
        """The joules drawn since the start, by component, now."""
        reading = self.counters.read()
        with self._lock:
            self._readings.append(reading)
            totals = cumulative(self._readings, self.counters.wraps)[-1]
        return Reading(totals.time, by_component(totals.joules))

    def stop(self) -> Reading:
        self._stop.set()
        self._thread.join(timeout=self.poll + 5)
        return self.mark()


@dataclass(frozen=True)
class Entry:
    """One part of the sweep: a trial's life or a piece of overhead, with its joules by component."""

    kind: str  # TRIAL or OVERHEAD
    what: str  # "trial 3", "start-up", "opening", "close", "sweeper"
    t0: float  # time.monotonic() (the same clock in every process of one host)
    t1: float
    joules: dict[str, float]
    host: str
    overhead_j: float = 0.0  # a trial's records between epochs, inside its joules (for the ledger's detail)
    estimated: bool = False

    @property
    def total(self) -> float:
        return sum(self.joules.values())

    def saved(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "what": self.what,
            "t0": self.t0,
            "t1": self.t1,
            "j": self.joules,
            "host": self.host,
            "overhead_j": self.overhead_j,
            "estimated": self.estimated,
        }

    @classmethod
    def load(cls, saved: dict[str, Any]) -> Entry:
        return cls(
            saved["kind"],
            saved["what"],
            saved["t0"],
            saved["t1"],
            saved["j"],
            saved["host"],
            saved.get("overhead_j", 0.0),
            saved.get("estimated", False),
        )


def joules_of(gpu: float | None, cpu: float | None) -> dict[str, float]:
    """A measurement's parts as ledger components (RAPL's DRAM counts with the CPU's)."""
    return {k: v for k, v in (("gpu", gpu), ("cpu", cpu)) if v is not None}


@dataclass
class Ledger:
    start: float
    end: float
    total: dict[str, float] | None  # by component; None: no independent counter
    trials_j: float
    trial_overhead_j: float
    overhead_j: dict[str, float]  # by what: start-up, opening, close, sweeper
    uncovered_seconds: float
    between_w: float
    trials: int
    estimated: bool  # some part came from the estimate
    left_out: list[str] = field(default_factory=list)  # entries the ledger could not place, and why

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def total_j(self) -> float | None:
        return None if self.total is None else sum(self.total.values())

    @property
    def idle_j(self) -> float:
        return self.uncovered_seconds * self.between_w

    @property
    def unexplained_j(self) -> float | None:
        total = self.total_j
        return None if total is None else total - self.trials_j - sum(self.overhead_j.values()) - self.idle_j

    @property
    def unexplained_share(self) -> float | None:
        total, left = self.total_j, self.unexplained_j
        return None if total is None or left is None or total <= 0 else left / total

    def metrics(self) -> dict[str, float | None]:
        share = self.unexplained_share
        return {
            "ledger_total_j": self.total_j,
            "ledger_trials_j": self.trials_j,
            "ledger_trial_overhead_j": self.trial_overhead_j,
            "ledger_overhead_j": sum(self.overhead_j.values()),
            **{f"ledger_overhead_{what}_j": j for what, j in sorted(self.overhead_j.items())},
            "ledger_idle_j": self.idle_j,
            "ledger_unexplained_j": self.unexplained_j,
            "ledger_unexplained_pct": None if share is None else 100.0 * share,
            "ledger_seconds": self.seconds,
            "ledger_uncovered_seconds": self.uncovered_seconds,
            "ledger_between_power_w": self.between_w,
            "ledger_trials": float(self.trials),
        }

    def line(self) -> str:
        """One line: total, trials, overhead, idle, unexplained."""
        parts = (
            f"trials {self.trials_j:.1f} J (of which their records {self.trial_overhead_j:.1f} J), "
            f"overhead {sum(self.overhead_j.values()):.1f} J, idle between {self.idle_j:.1f} J "
            f"({self.uncovered_seconds:.1f} s x {self.between_w:.1f} W, estimated)"
        )
        if self.total_j is None:
            return f"energy ledger over {self.seconds:.1f} s: no independent counter here (energy estimated); {parts}"
        share = self.unexplained_share
        left = "" if share is None else f" ({100 * share:+.2f} %)"
        return (
            f"energy ledger over {self.seconds:.1f} s: counters {self.total_j:.1f} J = {parts} "
            f"+ unexplained {self.unexplained_j:.1f} J{left}"
        )


def covered_seconds(spans: Iterable[tuple[float, float]]) -> float:
    """How long the union of the spans lasts."""
    covered, reach = 0.0, float("-inf")
    for t0, t1 in sorted(spans):
        if t1 <= reach:
            continue
        covered += t1 - max(t0, reach)
        reach = t1
    return covered


def close_ledger(
    start: float,
    end: float,
    total: dict[str, float] | None,
    entries: Iterable[Entry],
    between_w: float,
    host: str,
    slack: float = 1.0,
) -> Ledger:
    """The ledger of a sweep that ran from `start` to `end` on `host`, whose counters drew
    `total` (None: none to read), from the parts' entries. An entry from another host, or
    lying outside the sweep (by more than `slack` seconds: clocks are read microseconds apart),
    is left out and named."""
    placed, left_out = [], []
    for entry in entries:
        if entry.host != host:
            left_out.append(f"{entry.what} ran on {entry.host}, which this host's counters do not see")
        elif entry.t0 < start - slack or entry.t1 > end + slack:
            left_out.append(f"{entry.what} lies outside the sweep's span")
        else:
            placed.append(entry)
    trials = [e for e in placed if e.kind == TRIAL]
    overhead: dict[str, float] = {}
    for entry in placed:
        if entry.kind == OVERHEAD:
            overhead[entry.what] = overhead.get(entry.what, 0.0) + entry.total
    spans = [(max(e.t0, start), min(e.t1, end)) for e in placed]
    return Ledger(
        start,
        end,
        total,
        sum(e.total for e in trials),
        sum(e.overhead_j for e in trials),
        overhead,
        max(0.0, (end - start) - covered_seconds(spans)),
        between_w,
        len({e.what for e in trials}),
        any(e.estimated for e in placed),
        left_out,
    )
