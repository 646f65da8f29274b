"""The mark that a sweep met a full store, seen by every process of the sweep.

greenai.sweep.full_stop says why: a sweep that met a full store starts no further job, whatever
launches its jobs. Hydra's basic launcher and the fused launcher run their jobs in the sweeping
process; joblib's workers and submitit's jobs are other processes (on other hosts, under Slurm).
So the mark is kept in memory and written as a file in every place that takes it: the sweep
folder, seen from every host, and, since the full disk may be the sweep folder's own, this
host's /dev/shm and temporary folder. Each command's sweep has an id of its own
(`GREENAI_SWEEP_ID`, set when the sweep starts and inherited by every job it launches) that
names the files, so a later command in the same sweep folder starts unmarked.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path

from greenai.errors import StoreFull
from greenai.stores.sweep_folder import SweepFolder, write_atomic

log = logging.getLogger(__name__)
SWEEP_ID_ENV = "GREENAI_SWEEP_ID"
# The full store each sweep of this process met (or found marked), by sweep id.
_marks: dict[str, StoreFull] = {}


class SweepStopped(StoreFull):
    """A job that did not start because its sweep had met a full store: that store's line."""


def _places(sweep_dir: str | Path, sweep_id: str) -> list[Path]:
    """Where the mark of sweep `sweep_id` is written and looked for: shared first, then this host's."""
    name = f"greenai-stopped-{sweep_id}"
    here = [Path("/dev/shm"), Path(tempfile.gettempdir())]
    return [SweepFolder(sweep_dir).meta / name, *(folder / name for folder in here if folder.is_dir())]


def mark(full: StoreFull, sweep_dir: str | Path | None) -> None:
    """The sweep met `full`: no job of it starts from now on (said once, in this job's log)."""
    sweep_id = os.environ.get(SWEEP_ID_ENV)
    if sweep_id is None or sweep_dir is None or sweep_id in _marks:
        return
    _marks[sweep_id] = full
    written = 0
    for place in _places(sweep_dir, sweep_id):
        try:
            write_atomic(place, str(full))
            written += 1
        except OSError as exc:  # that disk is full too: the other places tell the other processes
            log.debug("sweep stop not written to %s: %s", place, exc)
    others = "" if written else " (no other process can be told: every place to write it is full)"
    log.warning("%s: no further job of this sweep starts%s", full, others)


def stopped(sweep_dir: str | Path | None) -> StoreFull | None:
    """The full store that stopped this process's sweep, if a job of it met one."""
    sweep_id = os.environ.get(SWEEP_ID_ENV)
    if sweep_id is None or sweep_dir is None:
        return None
    if sweep_id not in _marks:
        for place in _places(sweep_dir, sweep_id):
            with contextlib.suppress(OSError):
                _marks[sweep_id] = StoreFull(place.read_text())
                break
    return _marks.get(sweep_id)


def not_started(job_num: int, full: StoreFull) -> SweepStopped:
    """What ends a job that does not start because its sweep met `full`, said in one line."""
    log.warning("job #%d not started: the sweep stopped on a full store (%s)", job_num, full)
    return SweepStopped(str(full))


def check(sweep_dir: str | None, job_num: int) -> None:
    """Before a job's trial opens its run: SweepStopped if its sweep met a full store."""
    full = stopped(sweep_dir)
    if full is not None:
        raise not_started(job_num, full)


def clear(sweep_dir: str | Path, sweep_id: str) -> None:
    """The sweep ended: its marks go, in memory and on disk."""
    _marks.pop(sweep_id, None)
    for place in _places(sweep_dir, sweep_id):
        with contextlib.suppress(OSError):
            place.unlink(missing_ok=True)
