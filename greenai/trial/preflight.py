"""Checks that refuse bad input before any data is read, any energy spent or any run created:
one job's composed config, or every job of a plain Hydra sweep.

A plain sweep (`conv_layers=1,2,5`) is expanded into its jobs and each job's config is composed
and checked, so a bad value fails the command at once instead of after the good jobs have
spent their energy. The dataset files are checked once per distinct dataset.
"""

from __future__ import annotations

import itertools

from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from greenai.config import EnergyBackend, Objective, TrainConfig, to_typed
from greenai.errors import ConfigError
from greenai.training import devices, inputs, models
from greenai.training.precision import check_precision
from greenai.trial.app_settings import to_settings
from greenai.trial.sweep_identity import in_app

MAX_CHECKED_JOBS = 2000


def check_job(cfg: DictConfig) -> tuple[TrainConfig, models.ArchitectureSpec]:
    """The typed config and architecture of one job, or a one-line ConfigError. The image shape
    and classes come from the config where it gives them (the paper's datasets), else from the
    data's first image; a model other than the paper's is checked by one forward pass."""
    config = to_typed(cfg)
    facts = inputs.describe(config.dataset, tuple(config.trusted_targets))
    spec = models.ArchitectureSpec.from_config(config, facts.input_shape, facts.classes)
    models.check_architecture(spec)
    device = devices.pick_device(config.device)
    check_precision(config.precision.name, device, devices.describe(device))
    if config.objective.name is Objective.accuracy_energy and config.energy.backend is EnergyBackend.off:
        raise ConfigError("objective", "accuracy_energy", "needs energy measured or estimated, not energy=off")
    if config.fuse and config.sweep.trials_per_gpu > 1:
        raise ConfigError(
            "fuse",
            True,
            "packed trials (sweep.trials_per_gpu > 1) are attributed one by one; "
            "use hydra/launcher=fused instead of packing them, or fuse=false",
        )
    return config, spec


def job_override_lists(config: DictConfig) -> list[list[str]]:
    """The override list of every job a plain sweep will launch (Hydra's cartesian product)."""
    task = OmegaConf.to_container(config.hydra.overrides.task, resolve=False)
    assert isinstance(task, list)
    parsed = OverridesParser.create().parse_overrides(task)
    axes = []
    for override in parsed:
        key = override.get_key_element()
        if override.is_delete():
            axes.append([override.input_line])
        elif override.is_sweep_override():
            axes.append([f"{key}={v}" for v in override.sweep_string_iterator()])
        else:
            axes.append([f"{key}={override.get_value_element_as_str()}"])
    return [list(combo) for combo in itertools.islice(itertools.product(*axes), MAX_CHECKED_JOBS)]


def compose_job(config: DictConfig, overrides: list[str]) -> DictConfig:
    loader = GlobalHydra.instance().config_loader()
    return loader.load_sweep_config(config, overrides)


def check_jobs(config: DictConfig, override_lists: list[list[str]]) -> list[TrainConfig]:
    """Compose and check each job; check each distinct dataset's files once. A user's app:
    greenai's settings of each job (its own keys are the app's to check)."""
    if in_app(config):
        for overrides in override_lists:
            to_settings(compose_job(config, overrides))
        return []
    checked, datasets_seen = [], set()
    for overrides in override_lists:
        typed, _ = check_job(compose_job(config, overrides))
        ds = typed.dataset
        key = (ds.kind, ds.name, ds._target_, repr(ds.args), ds.root, ds.cache_dir)
        if key not in datasets_seen:
            inputs.check_files(ds, tuple(typed.trusted_targets))
            datasets_seen.add(key)
        checked.append(typed)
    return checked
