"""Which sweep a command is: greenai's Optuna sweeper or Hydra's plain sweep, its searcher, and
the study it belongs to.

Rerunning the same command must reopen the same study, so the default study name is derived
from what defines the sweep: the task's overrides and the sweeper's sampler, directions and
search space, but not n_trials (raising it extends the study) nor launcher or parallelism
settings. Nothing here imports greenai: the job, the sweeper and the parent run all ask it."""

from __future__ import annotations

import hashlib
import json

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
    return sorted(o for o in task if not o.lstrip("+~").startswith(NOT_DEFINING))


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
    """`sweep.study_name` if set, else `<model>-<dataset>-<sampler>-<hash of the definition>`."""
    explicit = OmegaConf.select(config, "sweep.study_name")
    if explicit:
        return str(explicit)
    definition = {"overrides": _defining_overrides(config), **_search_definition(config)}
    digest = hashlib.sha256(json.dumps(definition, sort_keys=True, default=str).encode()).hexdigest()[:10]
    sampler = str(config.hydra.sweeper.sampler._target_).rsplit(".", 1)[-1].removesuffix("Sampler").lower()
    model, dataset = (getattr(v, "value", v) for v in (config.model.name, config.dataset.name))
    return f"{model}-{dataset}-{sampler}-{digest}"
