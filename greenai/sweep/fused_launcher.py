"""`hydra/launcher=fused`: a Hydra launcher that trains a batch of jobs as fused groups.

It receives a batch of jobs from any sweeper (Hydra's plain sweep, greenai's Optuna sweeper with
`hydra.sweeper.n_jobs=K`), prepares each job through Hydra's own `run_job` (its output folder,
its config files, its MLflow run and Optuna trial, checks that refuse bad input), groups the
prepared trials by what must match to fuse (greenai.training.fusion.fusion_key: architecture, batch
size, epochs, dataset, device, energy backend), trains each group as one grouped model
(greenai.trial.runner.run_fused) and returns one result per job. Trials whose `fuse` setting is
off train one after another, as with Hydra's basic launcher. Members that cannot fuse are
grouped apart, never refused.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from greenai.errors import interrupt_on_sigterm
from greenai.stores.log_files import guard_log_files
from greenai.stores.redaction import redact_logs

log = logging.getLogger(__name__)
TARGET = "greenai.sweep.fused_launcher.FusedLauncher"


@dataclass
class FusedLauncherConf:
    _target_: str = TARGET
    # Most trials per fused group (each brings its repeats); null: every trial of one architecture.
    max_group: int | None = None


def register() -> None:
    ConfigStore.instance().store(
        group="hydra/launcher", name="fused", node=FusedLauncherConf, provider="greenai", replace=True
    )


def prepare_trial(cfg: DictConfig) -> Any:
    """The task each job runs under Hydra's run_job: everything up to training."""
    # Training code (torch) is imported when a batch is launched, not when Hydra loads its
    # plugins at every command's start (the report's too).
    from greenai.trial.runner import PreparedTrial
    from greenai.trial.setup import open_record, prepare

    interrupt_on_sigterm()
    redact_logs()
    guard_log_files()
    setup = prepare(cfg)
    return PreparedTrial(setup, open_record(setup))


class FusedLauncher(Launcher):
    def __init__(self, max_group: int | None = None) -> None:
        self.max_group = max_group
        self._templates: dict[tuple[str, ...], DictConfig] = {}
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None and self.hydra_context is not None
        setup_globals()
        configure_log(
            self.config.hydra.hydra_logging,
            self.config.hydra.verbose,
            execution_whitelist=self.hydra_context.execution_whitelist,
        )
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info("Launching %d jobs fused", len(job_overrides))
        returns = [
            self._prepare(initial_job_idx + i, overrides, first=i == 0) for i, overrides in enumerate(job_overrides)
        ]
        from greenai.trial.runner import run_alone, run_fused

        ready = [i for i, r in enumerate(returns) if r.status is JobStatus.COMPLETED]
        trials = [returns[i].return_value for i in ready]
        for group in self._groups(trials):
            outcomes = (
                run_fused([trials[g] for g in group]) if trials[group[0]].setup.fused else [run_alone(trials[group[0]])]
            )
            for g, outcome in zip(group, outcomes, strict=True):
                _settle(returns[ready[g]], outcome)
        configure_log(
            self.config.hydra.hydra_logging,
            self.config.hydra.verbose,
            execution_whitelist=self.hydra_context.execution_whitelist,
        )
        return returns

    def _prepare(self, number: int, overrides: Sequence[str], first: bool) -> JobReturn:
        log.info("\t#%d : %s", number, " ".join(filter_overrides(overrides)))
        assert self.config is not None and self.hydra_context is not None
        config = self._compose(list(overrides))
        with read_write(config.hydra), open_dict(config.hydra):  # run_job left it read-only
            config.hydra.job.id = str(number)
            config.hydra.job.num = number
        # Job logging is set up once per batch: the batch's jobs then train together.
        return run_job(
            hydra_context=self.hydra_context,
            task_function=prepare_trial,
            config=config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
            configure_logging=first,
        )

    def _compose(self, overrides: list[str]) -> DictConfig:
        """The job's config. Hydra composes the first job of each shape (the same override keys);
        a job that differs from it only in plain values (lr=..., seed=...; group choices the
        same) gets that config again with its own values set, which is what composing would
        give, at a tenth of the cost: composition would otherwise be most of a fused trial's
        bookkeeping. Reusing one object is safe because run_job copies what a job keeps (its
        config and Hydra's) before returning, and every key of the shape is set again here."""
        assert self.config is not None and self.hydra_context is not None
        parsed = OverridesParser.create().parse_overrides(overrides)
        shape = tuple(sorted(o.key_or_group for o in parsed))
        template = self._templates.get(shape)
        if template is not None and all(_plain_value(o, template) for o in parsed):
            for o in parsed:
                if o.key_or_group not in template.hydra.runtime.choices:
                    OmegaConf.update(template, o.key_or_group, o.value(), merge=False)
            with read_write(template.hydra), open_dict(template.hydra):
                template.hydra.overrides.task = overrides
            return template
        config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        self._templates[shape] = config
        return config

    def _groups(self, trials: list[Any]) -> list[list[int]]:
        """Fused trials grouped by fusion key (at most max_group each); unfused ones alone."""
        from greenai.training import fusion

        fused = [i for i, t in enumerate(trials) if t.setup.fused]
        groups = [
            [fused[g] for g in group]
            for group in fusion.group_for_fusion([trials[i].setup.config for i in fused], self.max_group)
        ]
        return groups + [[i] for i, t in enumerate(trials) if not t.setup.fused]


def _plain_value(override: Override, template: DictConfig) -> bool:
    """A `key=value` change that composing would only assign: not a group choice other than the
    template's, nor Hydra's own settings, an addition, a deletion or a package."""
    if override.type is not OverrideType.CHANGE or override.package is not None or override.is_sweep_override():
        return False
    key = override.key_or_group
    if key.startswith("hydra"):
        return False
    choices = template.hydra.runtime.choices
    return key not in choices or str(choices[key]) == override.get_value_element_as_str()


def _settle(returned: JobReturn, outcome: Any) -> None:
    """The job's result: its value, or the exception that failed it (re-raised by return_value)."""
    from greenai.trial.outcome import Failed, job_return

    if isinstance(outcome, Failed):
        returned.status, returned._return_value = JobStatus.FAILED, outcome.error
    else:
        returned.status, returned._return_value = JobStatus.COMPLETED, job_return(outcome)
