"""Check every job of a sweep before the first one trains.

A plain Hydra sweep (`conv_layers=1,2,5`) is expanded into its jobs and each job's config is
composed and checked, so a bad value fails the command at once instead of after the good
jobs have spent their energy. The dataset files are checked once per distinct dataset.
"""

from __future__ import annotations

import itertools
import logging

from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from greenai import data
from greenai.checks import preflight
from greenai.config import TrainConfig

log = logging.getLogger(__name__)
MAX_CHECKED_JOBS = 2000


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
    """Compose and check each job; check each distinct dataset's files once."""
    checked, datasets_seen = [], set()
    for overrides in override_lists:
        typed, _ = preflight(compose_job(config, overrides))
        key = (typed.dataset.name, typed.dataset.root, typed.dataset.cache_dir)
        if key not in datasets_seen:
            data.check_files(typed.dataset)
            datasets_seen.add(key)
        checked.append(typed)
    return checked
