"""`greenai.Trial`: greenai's trial around a user's own training loop.

    @hydra.main(config_path="conf", config_name="config", execution_whitelist=greenai.TRUSTED_TARGETS)
    def main(cfg):
        with greenai.Trial(cfg) as trial:
            for _ in range(cfg.epochs):
                with trial.epoch():                 # the epoch's training: one energy window
                    train_one_epoch(model)
                    with trial.evaluation():        # its evaluation: a window apart
                        accuracy = evaluate(model)
                    trial.report(test_accuracy=accuracy)
                if trial.should_prune:              # greenai's sweeper's pruner says stop
                    break
        return trial.objective                      # what greenai's sweeper optimises

The app's config composes greenai's settings under `greenai` (`defaults: [greenai: trial]`);
docs/your-own-loop.md says the rest. Errors end as greenai's own command ends them: bad input in
one line (exit status 2), a full store in the one line that names it (exit status 3); in a
sweep the job fails with them, and the sweep says them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, NoReturn

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from greenai.config import GREENAI_TARGETS
from greenai.errors import BadInput, GreenAIError, StoreFull, fail, interrupt_on_sigterm
from greenai.stores import log_files
from greenai.stores.full_disk import exit_on_full
from greenai.stores.redaction import redact_logs
from greenai.trial.app_settings import DEFAULTS_LINE, job_config
from greenai.trial.app_trial import AppTrial, EpochWindows
from greenai.trial.job import JobContext, discard_run_folder
from greenai.trial.outcome import Failed, Outcome, PrunedAt, job_return

# Targets a user's app must let Hydra instantiate for greenai's configs: greenai's callbacks and
# sweeper, Hydra's plugins, Optuna's samplers and pruners, Hydra's job logging (greenai.train's).
TRUSTED_TARGETS = GREENAI_TARGETS


def said(exc: GreenAIError, where: str = "run", before_run: bool = False) -> NoReturn:
    """greenai's error as greenai's command says it: in a sweep, raised (the job fails with it
    and the sweep says it); in a single run, one line and exit status 3 for a full store, 2 for
    bad input (refused before its run opened: its Hydra folder removed)."""
    if JobContext.is_multirun():
        raise exc
    if isinstance(exc, StoreFull):
        exit_on_full(exc, where)
    if before_run and isinstance(exc, BadInput) and HydraConfig.initialized():
        discard_run_folder()
    fail(str(exc))


def start_job() -> None:
    """What greenai's command does as a job starts: SIGTERM closes the trial, credentials stay
    out of the logs, a job log on a full disk is said once."""
    interrupt_on_sigterm()
    redact_logs()
    if HydraConfig.initialized():
        log_files.guard_log_files()


def open_trial(
    cfg: DictConfig | None, device: torch.device | str | None, who: str, tags: dict[str, object] | None = None
) -> AppTrial:
    """The app's trial, opened; greenai's errors said as greenai says them."""
    start_job()
    config = cfg if cfg is not None else job_config()
    if config is None:
        said(
            BadInput(
                f"{who}: no config: pass the app's config, or run it in a Hydra app whose defaults list has "
                f"`{DEFAULTS_LINE}`"
            ),
            before_run=True,
        )
    try:
        return AppTrial.open(config, device, tags)
    except GreenAIError as exc:
        said(exc, "run not started", before_run=True)


def close_trial(trial: AppTrial, error: BaseException | None) -> Outcome:
    """Close the trial with what ended it. A full store, or an objective never reported, is
    said as greenai says it; the app's own error is left to the app (its caller re-raises it)."""
    try:
        outcome = trial.close(error)
    except StoreFull as full:
        said(full)
    if isinstance(outcome, Failed) and outcome.error is not error and isinstance(outcome.error, GreenAIError):
        said(outcome.error)
    log_full = log_files.full()  # the trial is recorded, but its log met a full disk
    if log_full is not None:
        said(log_full, "run finished")
    return outcome


class Trial:
    """One trial of the app's own loop: `with greenai.Trial(cfg) as trial:` (module docstring).

    Pruning: after each epoch greenai's sweeper's pruner (greenai/pruner=...) judges the last
    value of `greenai.metric`; `trial.should_prune` says whether to stop. Stop by leaving the
    loop (`break`) or by raising `greenai.TrialPruned`: either way the trial is recorded as
    pruned after the epochs it ran, and `trial.objective` says so to the sweeper."""

    def __init__(self, cfg: DictConfig | None = None, *, device: torch.device | str | None = None) -> None:
        self._cfg, self._device = cfg, device
        self._trial: AppTrial | None = None
        self._windows: EpochWindows | None = None
        self._metrics: dict[str, Any] = {}
        self._outcome: Outcome | None = None

    def __enter__(self) -> Trial:
        self._trial = open_trial(self._cfg, self._device, "greenai.Trial")
        return self

    @property
    def device(self) -> torch.device:
        """The device whose energy is measured (`greenai.device`, or the one passed)."""
        return self._open.device

    @property
    def _open(self) -> AppTrial:
        if self._trial is None or self._outcome is not None:
            raise GreenAIError("greenai.Trial: use it inside `with greenai.Trial(cfg) as trial:`")
        return self._trial

    @contextlib.contextmanager
    def epoch(self) -> Iterator[Trial]:
        """One epoch: its training measured in one window, recorded with the metrics reported
        inside it when the block ends."""
        trial = self._open
        if self._windows is not None:
            raise GreenAIError("trial.epoch(): already inside an epoch; epochs follow one another")
        windows, self._metrics = trial.windows(), {}
        windows.start()
        self._windows = windows
        try:
            yield self
        finally:
            self._windows = None
        trial.epoch_done(windows, self._metrics)

    @contextlib.contextmanager
    def evaluation(self) -> Iterator[None]:
        """The epoch's evaluation, in a window apart from its training (inside `trial.epoch()`)."""
        if self._windows is None:
            raise GreenAIError("trial.evaluation(): use it inside `with trial.epoch():`")
        self._windows.begin_eval()
        try:
            yield
        finally:
            self._windows.end_eval()

    def report(self, **metrics: Any) -> None:
        """Metrics (numbers, or numpy and torch scalars): inside an epoch, the epoch's; after the
        last, final ones (a last test). `greenai.metric` is the trial's result."""
        if self._windows is not None:
            self._metrics.update(metrics)
        else:
            self._open.report_final(metrics)

    @property
    def should_prune(self) -> bool:
        """Whether the pruner stops the trial, judged after the last epoch."""
        return self._trial is not None and self._trial.stop

    @property
    def objective(self) -> float | tuple[float, float] | PrunedAt:
        """What the app's task function returns to the sweeper: the metric's last value
        (with the energy in J for objective=accuracy_energy), or PrunedAt for a pruned trial."""
        if self._outcome is None:
            raise GreenAIError("trial.objective: known once the `with greenai.Trial(cfg)` block has ended")
        return job_return(self._outcome)

    def __exit__(self, exc_type: Any, error: BaseException | None, traceback: Any) -> bool:
        if self._trial is None or self._outcome is not None:
            return False
        self._outcome = close_trial(self._trial, error)
        if isinstance(self._outcome, PrunedAt) and error is not None:
            return True  # TrialPruned ended the block: recorded, and not an error
        if isinstance(error, GreenAIError):
            said(error)
        return False
