"""greenai's trial for a Lightning `Trainer`, through Lightning's own `Callback` API
(`pip install 'greenai[lightning]'`). Add it to the Trainer's callbacks, in a
lightning-hydra-template style config for instance:

    callbacks:
      greenai:
        _target_: greenai.api.lightning.TrialCallback

`Trainer.fit` is then one greenai trial: one energy window per training epoch, the validations
inside it measured apart (not the sanity check before training), the callback metrics of each
epoch on the trial's MLflow run with its energy figures, the pruner's decision after each epoch
(`trainer.should_stop`), and the run and study closed when fit ends or fails. The config is the
running Hydra job's (kept by the `greenai: trial` node's callbacks), or the one passed.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from greenai.api.trial import close_trial, open_trial, said
from greenai.errors import EXIT_BAD_INPUT, GreenAIError, fail
from greenai.trial.app_trial import AppTrial, EpochWindows
from greenai.trial.outcome import PrunedAt, job_return

try:
    import lightning
    from lightning.pytorch import Callback
except ImportError:  # said when the callback is made (check_lightning), not when this is imported
    lightning, Callback = None, object  # type: ignore[assignment,misc]

# The Lightning versions this callback is written and tested for; pyproject.toml's extra
# `greenai[lightning]` pins the same range.
SUPPORTED = SpecifierSet(">=2.5,<2.7")


def check_lightning(version: str | None) -> None:
    """One line and exit status 2 where Lightning is missing or outside the supported range."""
    if version is None:
        fail("greenai.api.lightning.TrialCallback needs Lightning: pip install 'greenai[lightning]'", EXIT_BAD_INPUT)
    if Version(version) not in SUPPORTED:
        fail(
            f"lightning={version}: greenai's TrialCallback supports lightning{SUPPORTED}; "
            f"pip install 'greenai[lightning]' installs one",
            EXIT_BAD_INPUT,
        )


def scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The Trainer's callback metrics that are single numbers."""
    return {k: float(v) for k, v in metrics.items() if getattr(v, "numel", lambda: 1)() == 1}


class TrialCallback(Callback):  # type: ignore[misc]
    def __init__(self, config: DictConfig | None = None) -> None:
        check_lightning(getattr(lightning, "__version__", None))
        super().__init__()
        self.config = config
        self.trial: AppTrial | None = None
        self.windows: EpochWindows | None = None
        self.outcome: Any = None

    @property
    def objective(self) -> float | tuple[float, float] | PrunedAt | None:
        """What the app may return to the sweeper once fit has ended (as `greenai.Trial.objective`)."""
        return None if self.outcome is None else job_return(self.outcome)

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        if trainer.is_global_zero:  # one trial per fit, recorded by the first process
            versions = {"versions.lightning": lightning.__version__}
            self.trial = open_trial(self.config, pl_module.device, "greenai.api.lightning.TrialCallback", versions)

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        if self.trial is not None:
            self.windows = self.trial.windows()
            self.windows.start()

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        if self.windows is not None and not trainer.sanity_checking:
            self.windows.begin_eval()

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if self.windows is not None and self.windows.evaluating:
            self.windows.end_eval()

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self.trial is None or self.windows is None:
            return
        windows, self.windows = self.windows, None
        if self.trial.epoch_done(windows, scalars(trainer.callback_metrics)):
            trainer.should_stop = True  # the pruner stops it: fit ends after this epoch

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        self._close(None)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._close(exception)
        if isinstance(exception, GreenAIError):  # a full store, met while recording: said as greenai says it
            said(exception)

    def _close(self, error: BaseException | None) -> None:
        trial, self.trial, self.windows = self.trial, None, None
        if trial is not None:
            self.outcome = close_trial(trial, error)
