"""The sweeping process's side of the sweep's energy ledger (greenai.energy.ledger): the
independent counter reading from the sweep's start to its end, the sweeper's own work between
launches, and the ledger closed against every part's entries when the sweep ends.

The parent-run callback opens the ledger once the idle power is measured and closes it when
the multirun ends; greenai's sweeper marks each launch (`launching`), so that its own work
between launches is measured too (Hydra's plain sweeper marks nothing: its work then counts as
time between trials).
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from omegaconf import DictConfig

from greenai.energy.counters import Reading
from greenai.energy.ledger import OVERHEAD, CounterReader, Entry, Ledger, close_ledger
from greenai.errors import GreenAIError
from greenai.stores.sweep_folder import SweepFolder
from greenai.trial.sweep_identity import settings

log = logging.getLogger(__name__)
SWEEPER = "sweeper"


class SweepLedger:
    def __init__(self, folder: SweepFolder, reader: CounterReader | None, between_w: float) -> None:
        self.folder, self.reader, self.between_w = folder, reader, between_w
        self.start = reader.started if reader is not None else time.monotonic()
        self.launches: list[tuple[Reading, Reading]] = []

    @classmethod
    def open(cls, config: DictConfig, folder: SweepFolder) -> SweepLedger | None:
        """The ledger of a sweep about to start, reading the counters the trials' meters read
        (None with energy=off). With the estimate there is nothing to read: the ledger says so."""
        from greenai.energy.meters import Source, make_meter  # torch: only once a sweep runs
        from greenai.training.devices import pick_device

        greenai = settings(config)  # the config itself, or a user's app's greenai node
        try:
            meter = make_meter(greenai.energy, pick_device(str(greenai.device)))
        except GreenAIError as exc:  # the jobs will say it, with the job's own settings
            log.info("no energy ledger for this sweep (%s)", exc)
            return None
        if meter.source is Source.off:
            return None
        counters = getattr(meter, "counters", None)
        if counters is None:
            return cls(folder, None, 0.0)
        idle = folder.host_measurement("idle", counters.key) or {}
        between = idle.get("context_watts") or idle.get("watts") or 0.0
        return cls(folder, CounterReader(counters), float(between))

    def close(self) -> Ledger:
        """Stop reading and settle the ledger against every entry the sweep's processes wrote."""
        ended = self.reader.stop() if self.reader is not None else None
        end = ended.time if ended is not None else time.monotonic()
        entries = [Entry.load(saved) for saved in self.folder.ledger_entries()] + self._sweeper_entries(ended)
        ledger = close_ledger(
            self.start, end, ended.joules if ended is not None else None, entries, self.between_w, socket.gethostname()
        )
        if ledger.left_out:
            log.warning(
                "energy ledger: %d entries left out (%s%s)",
                len(ledger.left_out),
                ledger.left_out[0],
                ", ..." if len(ledger.left_out) > 1 else "",
            )
        return ledger

    def _sweeper_entries(self, ended: Reading | None) -> list[Entry]:
        """The sweeper's work: from the start to the first launch, between launches, and from
        the last to the end (readings are the joules since the start)."""
        if ended is None or not self.launches:
            return []
        begin = Reading(self.start, dict.fromkeys(ended.joules, 0.0))
        stops = [begin, *(r for launch in self.launches for r in launch), ended]
        host = socket.gethostname()
        return [
            Entry(OVERHEAD, SWEEPER, a.time, b.time, {k: v - a.joules.get(k, 0.0) for k, v in b.joules.items()}, host)
            for a, b in zip(stops[::2], stops[1::2], strict=True)
        ]


_ACTIVE: dict[str, SweepLedger] = {}


def active() -> SweepLedger | None:
    return _ACTIVE.get("sweep")


def activate(ledger: SweepLedger | None) -> None:
    """The ledger greenai's sweeper marks its launches on (None: none)."""
    _ACTIVE.clear()
    if ledger is not None:
        _ACTIVE["sweep"] = ledger


@contextmanager
def launching() -> Iterator[None]:
    """Around one launch of the sweeper's: the counters read on either side (when a ledger is open)."""
    ledger = active()
    if ledger is None or ledger.reader is None:
        yield
        return
    before = ledger.reader.mark()
    try:
        yield
    finally:
        ledger.launches.append((before, ledger.reader.mark()))


def summary(ledger: Ledger) -> dict[str, Any]:
    """The ledger as the parent run's artifact."""
    return {
        **ledger.metrics(),
        "total_by_component_j": ledger.total,
        "overhead_by_kind_j": ledger.overhead_j,
        "estimated_parts": ledger.estimated,
        "left_out": ledger.left_out,
        "line": ledger.line(),
    }
