"""A packed trial's meter: cumulative counter readings at its window boundaries, handed to a
sink (the sweep folder) for the sweeper to attribute once the batch ends.

Trials packed onto one GPU (`hydra/launcher=packed`) cannot measure windows of their own: each
would count the others' work too. So a packed trial only notes when its windows begin and end,
with the counters' readings then; whose joules are whose is decided after the batch
(greenai.energy.attribution, from greenai.sweep.packing).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from greenai.energy.counters import Reading, ZeusCounters
from greenai.energy.meters import Measurement, Source

# Where a packed trial's records go: one JSON-able dict per window boundary or note.
Sink = Callable[[dict[str, Any]], None]


class TimelineMeter:
    """A packed trial's meter: counter readings at its window boundaries, written to `sink`;
    the window's energy is only known once the batch's energy is attributed."""

    source = Source.attributed

    def __init__(self, counters: ZeusCounters, sink: Sink, device: torch.device) -> None:
        self.counters, self.sink, self.device = counters, sink, device
        self.components = "+".join(counters.components)
        self.description = (
            f"packed: {self.components} counters shared with the batch's trials, attributed after the batch"
        )
        self._count: dict[str, int] = {}
        self._started: dict[str, Reading] = {}

    def note(self, **values: Any) -> None:
        """Facts the sweeper needs to turn attributed windows into the trial's figures."""
        self.sink({"event": "note", **values})

    def _read(self, event: str, name: str) -> Reading:
        torch.cuda.synchronize(self.device)  # the window holds the GPU work queued inside it
        reading = self.counters.read()
        self.sink(
            {"event": event, "window": name, "n": self._count.get(name, 0), "t": reading.time, "j": reading.joules}
        )
        return reading

    def begin(self, name: str) -> None:
        self._count[name] = self._count.get(name, 0) + 1
        self._started[name] = self._read("begin", name)

    def end(self, name: str) -> Measurement:
        ended = self._read("end", name)
        return Measurement(ended.time - self._started.pop(name).time, None, None, Source.attributed)

    def cancel(self, name: str) -> None:
        # A begin with no end is no window for the attribution: its time is the batch's overhead.
        self._started.pop(name, None)
