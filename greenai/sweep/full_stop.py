"""A sweep that met a full store starts no further job, whatever launches its jobs.

The first job that meets a full disk (StoreFull) marks its sweep stopped as it ends
(`SweepStopCallback.on_job_end`; the fused launcher after a group it trained). A job about to
open its trial's run looks for the mark first (`check`) and, finding it, ends at once with
SweepStopped, a StoreFull saying the same line, having opened nothing: one line says the job
did not start, and greenai's sweeper fails its Optuna trial as interrupted, so a resumed study
runs the point again. A job already training when the mark is made finishes, or stops on its
own write failure. Greenai's sweeper also stops after the batch; Hydra's plain sweep stops when
it reads the failed job's result after the batch, which the skipped jobs have made short.

Where the mark lives, so that every process of the sweep sees it: greenai.stores.sweep_stop.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from greenai.errors import GreenAIError, StoreFull
from greenai.stores.full_disk import exit_on_full, folder_full
from greenai.stores.sweep_stop import SWEEP_ID_ENV, SweepStopped, clear, mark


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
            clear(_sweep_dir(config), sweep_id)
        exc = sys.exc_info()[1]  # set when the sweep is ending by an exception
        if isinstance(exc, StoreFull):  # the command's one line, in greenai's command and in a user's app alike
            exit_on_full(exc, "sweep")
        if not isinstance(exc, GreenAIError):
            stopped = folder_full("hydra.sweep.dir", _sweep_dir(config), exc)
            if stopped is not None:
                exit_on_full(stopped, "sweep")
