"""Which sweep a command is: greenai's Optuna sweeper or Hydra's plain sweep, its searcher, and
the study it belongs to.

Rerunning the same command must reopen the same study, so the default study name is derived
from what defines the sweep: the task's overrides and the sweeper's sampler, directions and
search space, but not n_trials (raising it extends the study) nor launcher or parallelism
settings. Nothing here imports greenai: the job, the sweeper and the parent run all ask it.

greenai's own trial (`python -m greenai.train`) keeps its settings (`sweep`, `tracking`,
`energy`, `objective`, `device`) at the top of its config; a user's own Hydra app keeps them
under one node, `greenai` (docs/your-own-loop.md). `settings` and `settings_key` say where."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from omegaconf import DictConfig, OmegaConf

SWEEPER_TARGET = "greenai.sweep.sweeper.GreenOptunaSweeper"
# Overrides that change how a sweep runs, not what it searches.
NOT_DEFINING = (
    "sweep.study_name",
    "sweep.storage",
    "sweep.energy_budget_kj",
    "sweep.target_accuracy",
    "sweep.trials_per_gpu",
    "tracking.",
)


# A user's app: greenai's settings live under this node of its config.
APP_NODE = "greenai"


def in_app(config: DictConfig) -> bool:
    """A user's own Hydra app (greenai's settings under `greenai`), not `python -m greenai.train`."""
    return isinstance(config.get(APP_NODE), DictConfig)


def settings(config: DictConfig) -> DictConfig:
    """The node holding greenai's settings: the config itself, or a user's app's `greenai` node."""
    return config[APP_NODE] if in_app(config) else config


def settings_key(config: DictConfig, key: str) -> str:
    """The full key of one of greenai's settings (`sweep.storage`, or `greenai.sweep.storage`)."""
    return f"{APP_NODE}.{key}" if in_app(config) else key


def _setting(key: str, _root_: DictConfig) -> Any:
    return OmegaConf.select(settings(_root_), key, throw_on_missing=True)


# `${greenai.setting:sweep.storage}`: one of greenai's settings wherever the app keeps them, so
# that greenai's sweeper config reads them in greenai's own trial and in a user's app alike.
# Registered on import: every process that reads a greenai sweeper config has imported this.
OmegaConf.register_resolver("greenai.setting", _setting, replace=True)


# Optuna sampler class -> greenai's searcher name (conf/searcher/).
SEARCHERS = {"GridSampler": "grid", "RandomSampler": "random", "GPSampler": "bayes", "TPESampler": "tpe"}


def searcher_name(hydra_sweeper: DictConfig) -> str:
    """`grid`, `random`, `bayes`, `tpe` (another Optuna sampler: its class name), or `hydra-basic`."""
    if hydra_sweeper.get("_target_") != SWEEPER_TARGET:
        return "hydra-basic"
    sampler = str(OmegaConf.select(hydra_sweeper, "sampler._target_") or "").rsplit(".", 1)[-1]
    return SEARCHERS.get(sampler, sampler)


def is_greenai_sweep(config: DictConfig) -> bool:
    return OmegaConf.select(config, "hydra.sweeper._target_") == SWEEPER_TARGET


def _defining_overrides(config: DictConfig) -> list[str]:
    task = OmegaConf.to_container(config.hydra.overrides.task, resolve=False)
    assert isinstance(task, list)
    # A user's app names the same settings under `greenai.`.
    return sorted(o for o in task if not o.lstrip("+~").removeprefix(f"{APP_NODE}.").startswith(NOT_DEFINING))


def _search_definition(config: DictConfig) -> dict[str, object]:
    sweeper = config.hydra.sweeper
    return {
        "sampler": OmegaConf.to_container(sweeper.sampler, resolve=True),
        "direction": OmegaConf.to_container(sweeper.direction, resolve=True)
        if OmegaConf.is_config(sweeper.direction)
        else str(sweeper.direction),
        "params": OmegaConf.to_container(sweeper.params, resolve=False) if sweeper.params else {},
        "grid_points": sweeper.get("grid_points"),
    }


def study_name(config: DictConfig) -> str:
    """`sweep.study_name` if set, else `<model>-<dataset>-<sampler>-<hash of the definition>`
    (a user's app: `<its job name>-<sampler>-<hash>`)."""
    explicit = OmegaConf.select(config, settings_key(config, "sweep.study_name"))
    if explicit:
        return str(explicit)
    definition = {"overrides": _defining_overrides(config), **_search_definition(config)}
    digest = hashlib.sha256(json.dumps(definition, sort_keys=True, default=str).encode()).hexdigest()[:10]
    sampler = str(config.hydra.sweeper.sampler._target_).rsplit(".", 1)[-1].removesuffix("Sampler").lower()
    if in_app(config):  # its model and data keys are its own
        return f"{config.hydra.job.name}-{sampler}-{digest}"
    model, dataset = (getattr(v, "value", v) for v in (config.model.name, config.dataset.name))
    return f"{model}-{dataset}-{sampler}-{digest}"
