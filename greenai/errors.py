"""Errors greenai reports as one line: bad input the user can fix (exit status 2), a store
whose disk is full (exit status 3)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import NoReturn

EXIT_BAD_INPUT = 2
# A store's disk filled up: nothing wrong with the input, and rerunning after freeing space
# continues where the command stopped (greenai.stores.full_disk).
EXIT_STORE_FULL = 3


def fail(message: str, status: int = EXIT_BAD_INPUT) -> NoReturn:
    """Print one line to stderr and exit with `status`, 2 unless told (SystemExit passes
    through Hydra)."""
    print(f"greenai: error: {message}", file=sys.stderr)
    raise SystemExit(status)


def causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, then what it was raised from or while handling, and so on: libraries wrap the
    error that tells what happened (a driver's, the OS's) in their own."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def failure_reason(exc: BaseException) -> str:
    """Why something failed, in one line: the exception's type and its message's first line."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


class GreenAIError(Exception):
    """Input greenai refuses; the message is one line naming the key and what is allowed."""


class StoreUnavailable(GreenAIError):
    """A store stayed locked or away longer than greenai waits: one line naming it."""


class StoreFull(GreenAIError):
    """The disk holding a store is full: one line naming the store and the file. The trial it
    stops is interrupted, not failed by its own doing: its MLflow run ends KILLED and its Optuna
    trial FAIL marked interrupted, so resuming the study runs its point again."""

    trial_state = "killed"  # read by greenai.stores.tracking.end_state and StudyLink.finish


class BadInput(GreenAIError):
    """Input refused before anything ran: nothing is left behind for it."""


class ConfigError(BadInput, ValueError):
    def __init__(self, key: str, value: object, allowed: str) -> None:
        super().__init__(f"{key}={value}: {allowed}")
        self.key = key
        self.value = value


class DatasetError(BadInput):
    """Dataset files missing, truncated or corrupt, or nowhere to get them from."""


class EnergyError(BadInput):
    """An energy backend that was asked for cannot measure on this machine."""


_NOISE = (
    "full_key:",
    "object_type",
    "reference_type",
    "Config search path",
    "provider=",
    "Set the environment variable",
)


# Launchers that come with an extra of greenai's (pyproject.toml), by the plugin config they need.
EXTRAS = {"joblib": "joblib", "submitit_local": "slurm", "submitit_slurm": "slurm"}


def _extra_hint(option: str) -> str:
    extra = EXTRAS.get(option)
    return f" ({option} is Hydra's plugin: pip install 'greenai[{extra}]')" if extra else ""


def one_line(exc: BaseException) -> str:
    """Hydra's and OmegaConf's multi-line messages about a command line, as one line that names
    the key, the value and what is allowed."""
    text = "\n".join(str(e) for e in (exc, exc.__cause__) if e is not None)
    missing = re.search(r"Could not find '([^']+)/([^'/]+)'", text)
    if missing:
        group, option = missing.groups()
        options = re.findall(r"^\t(\S+)$", text, flags=re.MULTILINE)
        allowed = f"choose one of {', '.join(options)}" if options else "no such option"
        return f"{group}={option}: unknown {group}; {allowed}{_extra_hint(option)}"
    needs = re.search(r"In '([^']+)/([^'/]+)': Could not load '[^']+/([^'/]+)'", text)
    if needs:  # a ready launcher config whose plugin is not installed
        group, option, base = needs.groups()
        return f"{group}={option}: needs the {group} {base}, not installed here{_extra_hint(base)}"
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith(_NOISE)]
    joined = " ".join(dict.fromkeys(lines))
    unknown_key = re.search(r"To append to your config use \+(\S+)", joined)
    if unknown_key:
        hint = re.search(r"Did you mean: '([^']+)'", joined)
        return f"{unknown_key.group(1)}: no such key" + (
            f" (did you mean {hint.group(1)}?)" if hint else " (to add one, prefix it with +)"
        )
    # An enum key given a value outside it: say what is allowed as greenai's own checks do.
    joined = re.sub(r"Invalid value '[^']*', expected one of \[([^\]]*)\]", r"must be one of \1", joined)
    merging = re.match(r"Error merging override (\S+) (.*)", joined)
    return f"{merging.group(1)}: {merging.group(2)}" if merging else joined


@contextlib.contextmanager
def command_line_errors() -> Iterator[None]:
    """Run a Hydra app so that errors in its command line or config end as one line on stderr
    and exit status 2, instead of Hydra's multi-line report."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    previous = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra then raises instead of printing
    try:
        yield
    except (HydraException, OmegaConfBaseException) as exc:
        fail(one_line(exc))
    finally:
        if previous is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = previous


class Interrupted(KeyboardInterrupt):
    """SIGTERM, raised as an exception (as Ctrl-C raises KeyboardInterrupt) so that the running
    trial is closed cleanly: run KILLED, energy logged, Optuna trial failed and queued again."""


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(f"stopped by {signal.Signals(signum).name}")


def interrupt_on_sigterm() -> None:
    """Turn SIGTERM (what `kill`, systemd and schedulers send) into Interrupted, unless someone
    else (submitit, for its requeueing) already handles it."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _raise_interrupted)
