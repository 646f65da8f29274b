"""greenai's settings in a user's own Hydra app: the `greenai` node of its config.

A user's app keeps its own keys (model, data, trainer, ...) and composes greenai's settings
under `greenai` from the config group greenai registers (`defaults: [greenai: trial]`,
greenai.trial.app_configs). This is their typed schema and the checks that refuse bad values
before a run exists, as `greenai.config` is for greenai's own trial. The job's whole config is
kept by a Hydra callback for code that is not handed it (the Lightning callback).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from greenai.config import (
    EnergyBackend,
    EnergyConfig,
    Objective,
    ObjectiveConfig,
    SweepConfig,
    TrackingConfig,
    without_hydra,
)
from greenai.errors import BadInput, ConfigError
from greenai.trial.sweep_identity import APP_NODE

# What a user's app adds to its defaults list to compose this node.
DEFAULTS_LINE = "- greenai: trial"


@dataclass
class AppSettings:
    energy: EnergyConfig = field(default_factory=EnergyConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    # The reported metric that is the trial's result (its last value) and, after each epoch,
    # the value the pruner judges. greenai's sweep totals and report read it as `accuracy`.
    metric: str = "test_accuracy"
    # Whose energy is measured: auto = the first CUDA GPU if there is one, else the CPU; or
    # cpu, cuda, cuda:N. The Lightning callback measures the device its module trains on.
    device: str = "auto"
    # Seeds the searcher (greenai/searcher=...): the same command samples the same trials.
    seed: int = 1234


def to_settings(cfg: DictConfig) -> AppSettings:
    """The app's `greenai` node, typed and checked: a one-line ConfigError naming the key."""
    node = cfg.get(APP_NODE) if isinstance(cfg, DictConfig) else None
    if not isinstance(node, DictConfig):
        raise ConfigError(APP_NODE, "missing", f"add `{DEFAULTS_LINE}` to the defaults list of your app's config")
    try:
        # Resolved where it stands: its values may refer to the app's own keys.
        values = OmegaConf.to_container(node, resolve=True)
        typed = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(AppSettings), values))
    except OmegaConfBaseException as exc:  # OmegaConf's report is several lines: the key and its first
        key = getattr(exc, "full_key", None) or "?"
        raise BadInput(f"{APP_NODE}.{key}: {str(exc).strip().splitlines()[0]}") from exc
    assert isinstance(typed, AppSettings)
    check(typed)
    return typed


def check(settings: AppSettings) -> None:
    """Refuse values no trial can take, before a run exists."""
    if not settings.metric:
        raise ConfigError(f"{APP_NODE}.metric", settings.metric, "name the reported metric the sweep optimises")
    if settings.energy.watts_per_cpu_core <= 0:
        raise ConfigError(f"{APP_NODE}.energy.watts_per_cpu_core", settings.energy.watts_per_cpu_core, "must be > 0")
    if settings.energy.idle_seconds < 0:
        raise ConfigError(f"{APP_NODE}.energy.idle_seconds", settings.energy.idle_seconds, "must be >= 0")
    if settings.sweep.trials_per_gpu != 1:
        raise ConfigError(
            f"{APP_NODE}.sweep.trials_per_gpu",
            settings.sweep.trials_per_gpu,
            "must be 1: packing trials onto one GPU needs greenai's own trial (python -m greenai.train)",
        )
    if settings.sweep.heartbeat_grace_seconds < 1:
        raise ConfigError(
            f"{APP_NODE}.sweep.heartbeat_grace_seconds", settings.sweep.heartbeat_grace_seconds, "must be >= 1"
        )
    two = settings.objective.name is Objective.accuracy_energy
    if two and settings.energy.backend is EnergyBackend.off:
        raise ConfigError(
            f"{APP_NODE}.objective", "accuracy_energy", "needs energy measured or estimated, not energy.backend=off"
        )
    if len(settings.objective.directions) != (2 if two else 1):
        raise ConfigError(
            f"{APP_NODE}.objective.directions",
            list(settings.objective.directions),
            f"needs {2 if two else 1} direction(s) for objective.name={settings.objective.name.value}",
        )


# The config of the job running in this process, kept by JobConfig (below).
_job_config: DictConfig | None = None


class JobConfig(Callback):
    """Keeps each job's config while it runs (Hydra hands it to callbacks, and to the task
    function only otherwise), for greenai's code that the app instantiates from its config,
    such as the Lightning callback. Registered with the `greenai` node's callbacks."""

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _job_config
        _job_config = config

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        global _job_config
        _job_config = None


def job_config() -> DictConfig | None:
    """The running job's config, without Hydra's node; None outside a Hydra job of an app
    whose defaults include the `greenai` node."""
    return without_hydra(_job_config) if _job_config is not None else None
