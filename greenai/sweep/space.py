"""The search space of an Optuna-driven sweep: parsed from the Optuna sweeper's override syntax
(`interval(a, b)`, `tag(log, interval(a, b))`, `choice(...)`, `range(a, b)`), with greenai's rules:

- continuous ranges are searched half-open, [low, high): Gaussian-process samplers do land on
  bounds, and Adam takes no beta = 1 (the paper's beta ranges end at 1; its grid also left the
  upper bound out);
- a grid over a continuous range has `grid_points` evenly spaced values, the upper bound left
  out (log-spaced for `tag(log, ...)`);
- before the first trial, every range end and every choice is composed into a job config and
  checked, so a space training cannot take fails the command with one line.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna

# The Optuna sweeper plugin's parser of its own override syntax. It lives in the plugin's
# private module, and there is no public one; this is greenai's only use of it.
from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides  # noqa: I001
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from greenai.errors import GreenAIError, fail
from greenai.trial.sweep_identity import in_app, settings

# Overrides greenai's sweeper sets itself for every job (a user's app: under `greenai.`).
JOB_KEYS = ("sweep.trial_number", "sweep.study_name", "greenai.sweep.trial_number", "greenai.sweep.study_name")
MAX_SPACE_CHECKS = 200


@dataclass(frozen=True)
class SearchSpace:
    """What Optuna searches, and what every job gets as it is."""

    distributions: dict[str, BaseDistribution]
    fixed: dict[str, Any]
    fixed_overrides: list[str]

    def overrides(
        self, trial: optuna.trial.Trial, extend: Callable[[optuna.trial.Trial], None] | None = None
    ) -> list[str]:
        """Sample `trial`'s point (Optuna's public suggest API; a queued point comes back as
        queued), let `hydra.sweeper.custom_search_space` add to it, and return the job's
        overrides."""
        for name, dist in self.distributions.items():
            suggest(trial, name, dist)
        if extend is not None:
            extend(trial)
        params = {**trial.params, **self.fixed}
        return [f"{name}={value}" for name, value in params.items()] + list(self.fixed_overrides)

    def grid(self, points: int) -> dict[str, list[Any]]:
        return {name: grid_values(dist, points) for name, dist in self.distributions.items()}

    def probes(self) -> list[list[str]]:
        """Override lists that stand for the whole space: each end of each range (each choice),
        the other parameters left as fixed."""
        base = [f"{k}={v}" for k, v in self.fixed.items()] + list(self.fixed_overrides)
        return [[*base, f"{name}={value}"] for name, dist in self.distributions.items() for value in probe_values(dist)]


def suggest(trial: optuna.trial.Trial, name: str, dist: BaseDistribution) -> Any:
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    assert isinstance(dist, FloatDistribution)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)


def grid_values(distribution: BaseDistribution, points: int) -> list[Any]:
    """A parameter's grid: its choices, its integer steps, a stepped float range's steps, or
    `points` evenly spaced values of a continuous range with the upper bound left out."""
    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    if isinstance(distribution, IntDistribution):
        return list(range(distribution.low, distribution.high + 1, distribution.step))
    assert isinstance(distribution, FloatDistribution)
    low, high, step = distribution.low, distribution.high, distribution.step
    if step is not None:
        count = int(round((high - low) / step)) + 1
        values = [low + i * step for i in range(count)]
    elif distribution.log:
        ratio = math.log(high / low)
        values = [low * math.exp(ratio * i / points) for i in range(points)]
    else:
        values = [low + (high - low) * i / points for i in range(points)]
    # 12 significant digits: 0.28, not 0.28000000000000003, in overrides and run names.
    return [float(f"{v:.12g}") for v in values]


def half_open(distribution: BaseDistribution) -> BaseDistribution:
    """A continuous `interval(low, high)` searched as [low, high)."""
    if (
        isinstance(distribution, FloatDistribution)
        and distribution.step is None
        and distribution.low < distribution.high
    ):
        high = math.nextafter(distribution.high, distribution.low)
        return FloatDistribution(distribution.low, high, log=distribution.log)
    return distribution


def probe_values(distribution: BaseDistribution) -> list[Any]:
    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    assert isinstance(distribution, (IntDistribution, FloatDistribution))
    return [distribution.low, distribution.high]


def parse_space(params_conf: list[str]) -> SearchSpace:
    """The search space as the plugin reads `params_conf`, errors in one line."""
    try:
        space, fixed, fixed_overrides = create_params_from_overrides(params_conf)
    except (ValueError, AssertionError):
        for override in params_conf:  # find the culprit, to name it
            try:
                create_params_from_overrides([override])
            except (ValueError, AssertionError) as exc:
                fail(f"{override}: not a valid search range ({exc})")
        raise
    for name in fixed:
        space.pop(name, None)
    for key in JOB_KEYS:
        fixed.pop(key, None)
    if not space:
        fail(
            "hydra.sweeper.params: the search space is empty; add space=paper3 (or paper5, rq2) "
            "or sweep a parameter, e.g. lr='interval(1e-5,1e-1)'"
        )
    return SearchSpace({name: half_open(dist) for name, dist in space.items()}, fixed, list(fixed_overrides))


def sweep_params(config: DictConfig) -> list[str]:
    """The sweeper's `params` plus the command line's task overrides, as the sweep sees them."""
    params = config.hydra.sweeper.params or {}
    task = OmegaConf.to_container(config.hydra.overrides.task, resolve=False)
    assert isinstance(task, list)
    return [f"{k}={v}" for k, v in params.items()] + task


def check_space(config: DictConfig) -> SearchSpace:
    """Compose a job at each end of each range (each choice) and refuse what training cannot take."""
    if settings(config).sweep.pruner and len(settings(config).objective.directions) > 1:
        group = "greenai/" if in_app(config) else ""  # where a user's app finds greenai's groups
        fail(
            f"{group}pruner: Optuna cannot prune a multi-objective study (objective=accuracy_energy); "
            f"use {group}pruner=none"
        )
    from greenai.trial.preflight import check_jobs  # data and models: only when a sweep is checked

    space = parse_space(sweep_params(config))
    try:
        check_jobs(config, space.probes()[:MAX_SPACE_CHECKS])
    except GreenAIError as exc:
        fail(f"search space: {exc}")
    return space
