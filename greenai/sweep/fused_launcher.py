"""`hydra/launcher=fused`: a Hydra launcher that trains a batch of jobs as fused groups.

It receives a batch of jobs from any sweeper (Hydra's plain sweep, greenai's Optuna sweeper with
`hydra.sweeper.n_jobs=K`), prepares each job through Hydra's own `run_job` (its output folder,
its config files, its device, data and link to its Optuna trial, checks that refuse bad input),
groups the prepared trials by what must match to fuse (greenai.training.fusion.fusion_key: architecture,
batch size, epochs, dataset, device, energy backend), opens each group's MLflow runs as it
starts, trains it as one grouped model (greenai.trial.runner.run_fused) and returns one result
per job. Trials whose `fuse` setting is off train one after another, as with Hydra's basic
launcher. Members that cannot fuse are grouped apart, never refused. The line that starts
training says what it does: the fused groups and their sizes, or how many trials train one after
another and why (`fuse=false`, packed, or fusion off on the CPU with `fuse=null`).

Only greenai's own trial (`python -m greenai.train`, marked by `greenai_trial`) can be prepared and
fused. Another Hydra app that picks this launcher has its task function run as Hydra's basic
launcher runs it, job after job through `run_job`, and is told once that its jobs are not fused.

A batch stops on a full store as every launcher does (greenai.sweep.full_stop): after a group
whose trial met one, the groups not yet trained are skipped, before their runs are opened.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from greenai.errors import StoreFull, interrupt_on_sigterm
from greenai.stores import log_files, sweep_stop
from greenai.stores.redaction import redact_logs
from greenai.trial.outcome import Failed, Outcome, job_return

if TYPE_CHECKING:  # torch: imported once a batch is launched
    from greenai.trial.setup import TrialSetup

log = logging.getLogger(__name__)
TARGET = "greenai.sweep.fused_launcher.FusedLauncher"
TRIAL_MARK = "greenai_trial"


@dataclass
class FusedLauncherConf:
    _target_: str = TARGET
    # Most trials per fused group (each brings its repeats); null: every trial of one architecture.
    max_group: int | None = None


def register() -> None:
    ConfigStore.instance().store(
        group="hydra/launcher", name="fused", node=FusedLauncherConf, provider="greenai", replace=True
    )


def greenai_trial(task_function: TaskFunction) -> TaskFunction:
    """Marks greenai's trial (the task function of `python -m greenai.train`): the launcher may
    prepare its jobs here and train them fused."""
    setattr(task_function, TRIAL_MARK, True)
    return task_function


def prepare_trial(cfg: DictConfig) -> TrialSetup:
    """The task each job runs under Hydra's run_job: everything up to its run and training (its
    MLflow run is opened when its group starts training)."""
    # Training code (torch) is imported when a batch is launched, not when Hydra loads its
    # plugins at every command's start (the report's too).
    from greenai.trial.setup import prepare

    interrupt_on_sigterm()
    redact_logs()
    log_files.guard_log_files()
    return prepare(cfg)


class FusedLauncher(Launcher):
    def __init__(self, max_group: int | None = None) -> None:
        self.max_group = max_group
        self._templates: dict[tuple[str, ...], DictConfig] = {}
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None
        self._said_not_fused = False

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None and self.hydra_context is not None
        if not getattr(self.task_function, TRIAL_MARK, False):
            return self._launch_other_app(job_overrides, initial_job_idx)
        setup_globals()
        self._configure_log()
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info("Preparing %d jobs", len(job_overrides))
        returns = [
            self._prepare(initial_job_idx + i, overrides, first=i == 0) for i, overrides in enumerate(job_overrides)
        ]
        ready = [i for i, r in enumerate(returns) if r.status is JobStatus.COMPLETED]
        jobs = [returns[i].return_value for i in ready]
        groups = self._groups(jobs)
        log.info(_plan(jobs, groups, len(job_overrides)))
        for group in groups:
            outcomes = _train([jobs[g] for g in group])
            for g, outcome in zip(group, outcomes, strict=True):
                _settle(returns[ready[g]], outcome)
        self._configure_log()
        return returns

    def _launch_other_app(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        """Jobs of another app's task function: run as Hydra's basic launcher runs them, one
        after another through run_job; fusing needs greenai's trial (said once)."""
        from hydra._internal.core_plugins.basic_launcher import BasicLauncher

        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        if not self._said_not_fused:
            task = f"{self.task_function.__module__}.{self.task_function.__qualname__}"
            log.info(
                "hydra/launcher=fused: %s is not greenai's trial, so its jobs run one after another, not fused", task
            )
            self._said_not_fused = True
        basic = BasicLauncher()
        basic.setup(hydra_context=self.hydra_context, task_function=self.task_function, config=self.config)
        return basic.launch(job_overrides, initial_job_idx)

    def _configure_log(self) -> None:
        assert self.config is not None and self.hydra_context is not None
        configure_log(
            self.config.hydra.hydra_logging,
            self.config.hydra.verbose,
            execution_whitelist=self.hydra_context.execution_whitelist,
        )

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

        fused = [i for i, t in enumerate(trials) if t.fused]
        groups = [
            [fused[g] for g in group]
            for group in fusion.group_for_fusion([trials[i].config for i in fused], self.max_group)
        ]
        return groups + [[i] for i, t in enumerate(trials) if not t.fused]


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


def _train(jobs: list[TrialSetup]) -> list[Any]:
    """Open the runs of one group (or of one unfused trial) and train it; what each job returns.
    A job whose run cannot open ends with that error: SweepStopped if a job of the sweep met a
    full store (greenai.sweep.full_stop). A trial meeting one here marks the sweep stopped."""
    from greenai.trial.runner import run_alone, run_fused

    opened = _open_runs(jobs)
    trials = [t for t in opened if not isinstance(t, Failed)]
    trained: list[Outcome] = []
    if trials:
        try:
            trained = run_fused(trials) if trials[0].setup.fused else [run_alone(trials[0])]
        except StoreFull as exc:  # closing a trial met the full store: each job of the group ends on it
            trained = [Failed(exc)] * len(trials)
    full = (o.error for o in trained if isinstance(o, Failed) and isinstance(o.error, StoreFull))
    met = next(full, None) or log_files.full()
    if met is not None:
        sweep_stop.mark(met, jobs[0].job.sweep_dir)
    outcomes = iter(trained)
    return [t if isinstance(t, Failed) else next(outcomes) for t in opened]


def _open_runs(jobs: list[TrialSetup]) -> list[Any]:
    """Each job's trial with its MLflow run open, or Failed with the exception that refused it."""
    from greenai.trial.runner import PreparedTrial
    from greenai.trial.setup import open_record

    opened: list[Any] = []
    for job in jobs:
        try:
            opened.append(PreparedTrial(job, open_record(job)))
        except Exception as exc:
            opened.append(Failed(exc))
        except BaseException as exc:  # a signal: the runs already open are closed KILLED
            for trial in opened:
                if not isinstance(trial, Failed):
                    trial.record.close(Failed(exc))
            raise
    return opened


def _plan(ready: list[TrialSetup], groups: list[list[int]], jobs: int) -> str:
    """The line that starts training: the fused groups and their sizes, and how many trials
    train one after another, unfused, and why."""
    sizes = [len(g) for g in groups if ready[g[0]].fused]
    alone = Counter(ready[g[0]].unfused for g in groups if not ready[g[0]].fused)
    parts = []
    if sizes:
        plural = "s" if len(sizes) > 1 else ""
        parts.append(f"fused as {len(sizes)} group{plural} ({' + '.join(map(str, sizes))} trials)")
    if alone:
        parts.append(f"{sum(alone.values())} one after another, not fused ({'; '.join(alone)})")
    started = f"{len(ready)} jobs" if len(ready) == jobs else f"{len(ready)} of {jobs} jobs"
    return f"Launching {started}" + (f": {'; '.join(parts)}" if parts else "")


def _settle(returned: JobReturn, outcome: Outcome) -> None:
    """The job's result: its value, or the exception that failed it (re-raised by return_value)."""
    if isinstance(outcome, Failed):
        returned.status, returned._return_value = JobStatus.FAILED, outcome.error
    else:
        returned.status, returned._return_value = JobStatus.COMPLETED, job_return(outcome)
