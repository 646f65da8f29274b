"""Job log files on a disk that fills up.

Hydra's job logging writes every record to a file in the job's output folder as well as to the
console. Once that disk is full, Python's logging prints each record it cannot write with a
traceback ("--- Logging error ---"): hundreds of them in a sweep. A guarded file handler stops
at the first full-disk error instead: it says so once on the console, which keeps every line,
and writes nothing more; the command then ends with the one line naming the full folder
(greenai.stores.full_disk). Other errors of a log file are Python's business, as before.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from greenai.errors import StoreFull
from greenai.stores.full_disk import folder_full, output_folder

log = logging.getLogger(__name__)
_GUARDED = "_greenai_full_disk_guard"
# The first full disk a job log of this process met: the job, or the sweep, stops on it.
_full: list[StoreFull] = []


def guard_log_files(where: tuple[str, Path] | None = None) -> None:
    """Guard the file handlers of the root logger (Hydra's job log), a full disk named as
    `where` (key, folder), by default the running Hydra job's output folder. Hydra makes new
    handlers for each job, so this is called at every job start, as redact_logs is."""
    key, folder = where or output_folder()
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and not getattr(handler, _GUARDED, False):
            # handleError is what logging calls, inside emit, when a record cannot be written.
            handler.handleError = functools.partial(_on_error, handler, handler.handleError, key, folder)  # type: ignore[method-assign]
            setattr(handler, _GUARDED, True)


def _on_error(
    handler: logging.FileHandler,
    python_default: Callable[[logging.LogRecord], None],
    key: str,
    folder: Path,
    record: logging.LogRecord,
) -> None:
    stopped = folder_full(key, folder, sys.exc_info()[1], handler.baseFilename)
    if stopped is None:
        python_default(record)
        return
    handler.setLevel(logging.CRITICAL + 1)  # no record reaches it any more
    with contextlib.suppress(OSError, ValueError):
        handler.close()  # its buffer cannot be written either
    if _full:
        return  # said once per process: the sweep stops on the first full disk its logs met
    _full.append(stopped)
    log.warning("%s; this job's log stops here, the console keeps every line", stopped)


def full() -> StoreFull | None:
    """The full disk a job log of this process met, if any."""
    return _full[0] if _full else None
