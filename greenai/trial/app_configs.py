"""The config groups a user's own Hydra app composes greenai from, in Hydra's ConfigStore:

- `greenai: trial` (in the app's defaults list): greenai's settings under `greenai`
  (app_settings.AppSettings) and greenai's Hydra callbacks: the sweep's parent MLflow run, the
  stop on a full store, a single run's full output folder, the job's config kept;
- `greenai/searcher=grid|random|bayes|tpe`: greenai's Optuna sweeper with that sampler, as
  `searcher=` does for greenai's own trial (conf/searcher/);
- `greenai/pruner=none|median|successive_halving|hyperband`, as `pruner=` (conf/pruner/).

greenai's sweeper registers them as Hydra loads it (greenai.sweep.sweeper), so an app composes
them without importing greenai. The searchers and pruners hold the same values as conf/
(tests/e2e/test_own_loop.py compares them); their seed is `greenai.seed`.
"""

from __future__ import annotations

from typing import Any

from hydra.core.config_store import ConfigStore

from greenai.trial.app_settings import AppSettings
from greenai.trial.sweep_identity import APP_NODE

PROVIDER = "greenai"
# Hydra's callbacks that make a user's app's sweep greenai's: full_stop first, so that Hydra
# ends it last (as in conf/config.yaml).
CALLBACKS = {
    "greenai_full_stop": "greenai.sweep.full_stop.SweepStopCallback",
    "greenai_sweep_run": "greenai.sweep.parent_run.SweepRunCallback",
    "greenai_run_folder": "greenai.stores.full_disk.RunFolderCallback",
    "greenai_job_config": "greenai.trial.app_settings.JobConfig",
}
# searcher -> (Optuna sweeper plugin's sampler config, settings beyond its seed); conf/searcher/.
SEARCHERS: dict[str, tuple[str, dict[str, Any]]] = {
    "grid": ("grid", {}),
    "random": ("random", {}),
    "bayes": ("gp", {"n_startup_trials": 1}),
    "tpe": ("tpe", {"n_startup_trials": 10, "constant_liar": True}),
}
N_TRIALS = 64
# pruner -> `sweep.pruner`; conf/pruner/.
PRUNERS: dict[str, dict[str, Any] | None] = {
    "none": None,
    "median": {
        "_target_": "optuna.pruners.MedianPruner",
        "n_startup_trials": 4,
        "n_warmup_steps": 1,
        "interval_steps": 1,
    },
    "successive_halving": {
        "_target_": "optuna.pruners.SuccessiveHalvingPruner",
        "min_resource": 1,
        "reduction_factor": 3,
        "min_early_stopping_rate": 0,
    },
    "hyperband": {
        "_target_": "optuna.pruners.HyperbandPruner",
        "min_resource": 1,
        "max_resource": "auto",
        "reduction_factor": 3,
    },
}


def trial_node() -> dict[str, Any]:
    """`greenai: trial`, at the top of the app's config: its own values first, so that a searcher
    or pruner chosen on the command line (or in the app's defaults) takes precedence."""
    return {
        "defaults": ["_self_", {f"/{APP_NODE}/searcher": None}, {f"/{APP_NODE}/pruner": "none"}],
        APP_NODE: AppSettings,
        "hydra": {"callbacks": {name: {"_target_": target} for name, target in CALLBACKS.items()}},
    }


def searcher_node(sampler: str, extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "defaults": [{"override /hydra/sweeper": "greenai"}, {"override /hydra/sweeper/sampler": sampler}],
        "hydra": {"sweeper": {"n_trials": N_TRIALS, "sampler": {"seed": f"${{{APP_NODE}.seed}}", **extra}}},
    }


def register() -> None:
    store = ConfigStore.instance()
    # Package _global_: the node sets `greenai` and `hydra.callbacks`, wherever the app lists it.
    store.store(group=APP_NODE, name="trial", node=trial_node(), package="_global_", provider=PROVIDER, replace=True)
    for name, (sampler, extra) in SEARCHERS.items():
        store.store(
            group=f"{APP_NODE}/searcher",
            name=name,
            node=searcher_node(sampler, extra),
            package="_global_",
            provider=PROVIDER,
            replace=True,
        )
    for name, pruner in PRUNERS.items():
        store.store(
            group=f"{APP_NODE}/pruner",
            name=name,
            node={APP_NODE: {"sweep": {"pruner": pruner}}},
            package="_global_",
            provider=PROVIDER,
            replace=True,
        )
