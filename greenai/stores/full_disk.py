"""A disk that fills up under one of greenai's stores or Hydra's output folder.

Writing to a full disk fails the same way every time, so nothing waits for it: the MLflow and
Optuna stores' calls fail at once with StoreFull naming the store (greenai.stores.waits). A
trial that hits it keeps what the other store can still take (greenai.trial.record), a sweep
starts no further trial, whatever the launcher (greenai.sweep.full_stop; greenai's sweeper also
stops its loop), and the command ends with one line naming
the store and the file and saying how to go on (`stop_line`), exit status 3. Hydra's output
folder is no store greenai opens: a full disk there shows as an OSError from a file greenai or
Hydra writes in it (the job's .hydra files and log, the sweep folder's files), named here by
its key, hydra.sweep.dir or hydra.run.dir.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, NoReturn

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from greenai.errors import EXIT_STORE_FULL, StoreFull, fail
from greenai.stores import waits as store_waits
from greenai.stores.url import StoreURL


def folder_full(
    key: str, folder: str | Path, exc: BaseException | None, file: str | Path | None = None
) -> StoreFull | None:
    """`exc` as StoreFull naming `key=folder` if it says the disk is full (anywhere in its
    chain), else None. A write to an open file fails without the file's name: `file`, or else
    the folder, stands for it then."""
    if exc is None or isinstance(exc, StoreFull):
        return exc
    fault = store_waits.fault_of(exc)
    if fault is None or fault.kind != "full":
        return None
    fault = dataclasses.replace(fault, file=fault.file or str(file or folder))
    return store_waits.full(StoreURL.of_folder(folder, key), fault)


def output_folder() -> tuple[str, Path]:
    """The running Hydra job's output folder: its key and where it is."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN:
        return "hydra.sweep.dir", Path(hc.runtime.cwd) / str(hc.sweep.dir)
    return "hydra.run.dir", Path(hc.runtime.output_dir)


# What the command says after the full store, by how far it got.
NEXT_STEP = {
    "sweep": "the sweep stopped and starts no further trial. Finished trials are safe; free space there, then rerun "
    "the same command to continue the study",
    "run": "the run stopped, recorded as far as the stores could take it. Free space there, then run the command again",
    "run not started": "the run did not start. Free space there, then run the command again",
    "run finished": "the run finished and is recorded in the stores, but its log is cut short. Free space there before "
    "the next command",
}


def stop_line(exc: StoreFull, where: str) -> str:
    """The command's one line: the full store and file, what was kept, how to go on. `where`:
    sweep, run (a single run the full disk stopped), run not started, or run finished (only
    its log was cut)."""
    return f"{exc}; {NEXT_STEP[where]}"


def exit_on_full(exc: StoreFull, where: str) -> NoReturn:
    """The command ends on a full store: its one line (stop_line) and exit status 3. Every
    command and callback that ends on a full store ends here."""
    fail(stop_line(exc, where), EXIT_STORE_FULL)


class RunFolderCallback(Callback):
    """A single run whose Hydra files met a full disk before the run started (Hydra writes
    `<hydra.run.dir>/.hydra/*.yaml` first): one line naming hydra.run.dir and exit status 3,
    instead of Hydra's traceback. A sweep's jobs are the sweeper's (greenai.sweep.sweeper)."""

    def on_run_end(self, config: DictConfig, job_return: JobReturn | None = None, **kwargs: Any) -> None:
        if job_return is None or job_return.status is not JobStatus.FAILED:
            return
        # JobReturn.return_value would re-raise the error (and print a line): read it as set.
        error = getattr(job_return, "_return_value", None)
        if not isinstance(error, Exception) or not _raised_in_hydra(error):
            return  # the run's own errors (a full store among them) the run reports itself
        folder = Path(str(config.hydra.runtime.cwd)) / str(config.hydra.run.dir)
        stopped = folder_full("hydra.run.dir", folder, error)
        if stopped is not None:
            exit_on_full(stopped, "run not started")


def _raised_in_hydra(error: BaseException) -> bool:
    """Whether Hydra's own code raised `error` (writing its files), not the run it started."""
    tb, frame = error.__traceback__, None
    while tb is not None:
        tb, frame = tb.tb_next, tb.tb_frame
    return frame is not None and "hydra" in Path(frame.f_code.co_filename).parts
