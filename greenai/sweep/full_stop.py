"""A sweep that met a full store starts no further job, whatever launches its jobs.

The first job that meets a full disk (StoreFull) marks its sweep stopped as it ends
(`SweepStopCallback.on_job_end`; the fused launcher after a group it trained). A job about to
open its trial's run looks for the mark first (`check`) and, finding it, ends at once with
SweepStopped, a StoreFull saying the same line, having opened nothing: one line says the job
did not start, and greenai's sweeper fails its Optuna trial as interrupted, so a resumed study
runs the point again. A job already training when the mark is made finishes, or stops on its
own write failure. Greenai's sweeper also stops after the batch; Hydra's plain sweep stops when
it reads the failed job's result after the batch, which the skipped jobs have made short.

Hydra's basic launcher and the fused launcher run their jobs in the sweeping process; joblib's
workers and submitit's jobs are other processes (on other hosts, under Slurm). So the mark is
kept in memory and written as a file in every place that takes it: the sweep folder, seen from
every host, and, since the full disk may be the sweep folder's own, this host's /dev/shm and
temporary folder. Each command's sweep has an id of its own (`GREENAI_SWEEP_ID`, set when the
sweep starts and inherited by every job it launches) that names the files, so a later command
in the same sweep folder starts unmarked.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from greenai.errors import EXIT_STORE_FULL, GreenAIError, fail
from greenai.full_disk import folder_full, stop_line
from greenai.store_waits import StoreFull
from greenai.sweep_folder import SweepFolder, write_atomic

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


def _sweep_dir(config: DictConfig) -> Path:
    return Path(str(config.hydra.runtime.cwd)) / str(config.hydra.sweep.dir)


class SweepStopCallback(Callback):
    """Gives each sweep its id, marks it stopped when one of its jobs ends on a full store (in
    the job's process, whatever the launcher), and removes the marks when the sweep ends. Hydra
    writes a job's files (.hydra/*.yaml) before the job starts: a full disk there ends the sweep
    with one line naming hydra.sweep.dir, as greenai's sweeper says it, not Hydra's traceback.
    First among the callbacks, so that it ends the sweep after the others (Hydra ends them in
    reverse order)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        os.environ[SWEEP_ID_ENV] = uuid.uuid4().hex  # before any launcher starts a process

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if job_return.status is not JobStatus.FAILED:
            return
        # JobReturn.return_value would re-raise the error: read it as set.
        error = getattr(job_return, "_return_value", None)
        if isinstance(error, StoreFull) and not isinstance(error, SweepStopped):
            mark(error, _sweep_dir(config))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_id = os.environ.pop(SWEEP_ID_ENV, None)
        if sweep_id is not None:
            _marks.pop(sweep_id, None)
            for place in _places(_sweep_dir(config), sweep_id):
                with contextlib.suppress(OSError):
                    place.unlink(missing_ok=True)
        exc = sys.exc_info()[1]  # set when the sweep is ending by an exception
        if not isinstance(exc, GreenAIError):
            stopped = folder_full("hydra.sweep.dir", _sweep_dir(config), exc)
            if stopped is not None:
                fail(stop_line(stopped, "sweep"), EXIT_STORE_FULL)
