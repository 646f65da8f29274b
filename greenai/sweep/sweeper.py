"""greenai's Optuna sweeper (`hydra/sweeper=greenai`, selected by `searcher=...`): a Hydra
Sweeper that runs the loop "check when to stop, ask a batch, launch it, tell it" over an Optuna
study. It takes the Optuna sweeper plugin's config and override syntax and adds:

- resume: `n_trials` counts the study's finished trials, so rerunning a command continues its
  study; dead jobs' trials are failed and their points queued again (`study.SweepStudy`);
- each job learns its study and trial number (`sweep.study_name`, `sweep.trial_number`), so it
  reports per-epoch accuracy to the pruner and tells the study its own result (`study_link`);
- grid search over continuous ranges and a search space checked before the first trial
  (`space`); stop rules: grid exhausted, energy budget, accuracy target (`stopping`);
- packed trials (`sweep.trials_per_gpu=K`): each batch's GPU energy attributed (`packing`).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Any

import optuna
from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import get_method, instantiate
from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from greenai.errors import StoreFull, fail, failure_reason
from greenai.stores import log_files
from greenai.stores.full_disk import folder_full
from greenai.stores.redaction import redact_logs
from greenai.stores.sweep_folder import SweepFolder
from greenai.stores.url import StoreURL
from greenai.sweep.ledger import launching
from greenai.sweep.space import SearchSpace, check_space, parse_space
from greenai.sweep.stopping import FailureBudget, stop_reason
from greenai.sweep.study import FINISHED, WAIT_SECONDS, SweepStudy, existing_trials
from greenai.trial import app_configs
from greenai.trial.study_link import make_pruner
from greenai.trial.sweep_identity import SWEEPER_TARGET, settings, settings_key, study_name

log = logging.getLogger(__name__)
# The plugin's keys that greenai reads from `sweep.*` instead, so that the sweeper and every
# job (which never sees `hydra.sweeper`) agree on one study. `greenai.setting` finds them in
# greenai's own trial (`sweep.*`) and in a user's app (`greenai.sweep.*`; sweep_identity).
FROM_SWEEP_CONFIG = {"storage": "${greenai.setting:sweep.storage}", "study_name": "${greenai.setting:sweep.study_name}"}


@dataclass(frozen=True)
class LostJob:
    """Stands for the result of a job the launcher could not return (cancelled, timed out)."""

    reason: str

    @property
    def return_value(self) -> Any:
        raise RuntimeError(self.reason)


@dataclass
class GreenOptunaSweeperConf(OptunaSweeperConf):
    _target_: str = SWEEPER_TARGET
    # Read from the task config, so the objective group and `sweep.*` settle them.
    direction: Any = "${greenai.setting:objective.directions}"
    storage: Any = FROM_SWEEP_CONFIG["storage"]
    study_name: Any = FROM_SWEEP_CONFIG["study_name"]
    # One trial at a time: a sequential sampler sees each result before the next ask.
    n_jobs: int = 1
    # Failed trials allowed, as a fraction of n_trials over the whole sweep.
    max_failure_rate: float = 0.5
    grid_points: int = 5


def register() -> None:
    """`hydra/sweeper=greenai`, and the groups a user's own app composes greenai from."""
    ConfigStore.instance().store(
        group="hydra/sweeper", name="greenai", node=GreenOptunaSweeperConf, provider="greenai", replace=True
    )
    app_configs.register()


def check_sweep(config: DictConfig) -> SearchSpace:
    """Everything about a greenai sweep that can be refused before it starts (one line, exit 2)."""
    raw = OmegaConf.to_container(config.hydra.sweeper, resolve=False)
    assert isinstance(raw, dict)
    for key, expected in FROM_SWEEP_CONFIG.items():
        if raw.get(key) != expected:
            value = OmegaConf.select(config, f"hydra.sweeper.{key}")
            setting = settings_key(config, f"sweep.{key}")
            fail(
                f"hydra.sweeper.{key}={value}: greenai's jobs read the study's {key} from {setting}, so set "
                f"{setting}={value} instead (one setting for the sweeper and every job)"
            )
    return check_space(config)


class GreenOptunaSweeper(Sweeper):
    def __init__(
        self,
        sampler: Any,
        direction: Any,
        storage: Any,
        study_name: Any,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        custom_search_space: str | None,
        params: DictConfig | None,
        grid_points: int = 5,
    ) -> None:
        # The sampler stays a config until the study is opened (see _make_sampler).
        self.sampler_config, self.directions = sampler, direction
        self.n_trials, self.n_jobs, self.max_failure_rate = n_trials, n_jobs, max_failure_rate
        self.extend = get_method(custom_search_space) if custom_search_space else None
        self.params, self.grid_points = params, grid_points

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )
        self.settings = settings(config)  # greenai's own trial: the config; a user's app: its `greenai` node
        self.store = StoreURL.study(self.settings.sweep.storage, config.hydra.runtime.cwd)
        self.folder = SweepFolder(config.hydra.sweep.dir)

    # ------------------------------------------------------------ opening the study

    def _make_sampler(self, space: SearchSpace, trials_so_far: int | None) -> optuna.samplers.BaseSampler:
        """The configured sampler, seeded by `seed` for a new study: the same command samples
        the same trials. Reopening an existing study (resuming it, or a worker joining others
        on it) shifts the seed by the trials already there and by this process, so a resumed
        or parallel random sweep does not replay points already run or being run. Not a grid's:
        GridSampler numbers its points in an order drawn from the seed, and every process must
        agree on what grid point N is (it asks the study which numbers are taken)."""
        config = OmegaConf.create(OmegaConf.to_container(self.sampler_config, resolve=True))
        a_grid = str(config.get("_target_", "")).endswith("GridSampler")
        if trials_so_far is not None and config.get("seed") is not None and not a_grid:
            config.seed = (int(config.seed) + trials_so_far + 7919 * os.getpid()) % 2**32
        sampler = instantiate(
            config, _execution_whitelist_=("hydra_plugins.hydra_optuna_sweeper.*", "optuna.samplers.*")
        )
        if not (isinstance(sampler, functools.partial) and sampler.func == optuna.samplers.GridSampler):
            return sampler
        grid = space.grid(self.grid_points)
        size = math.prod(len(v) for v in grid.values())
        if self.n_trials > size:
            log.info("grid of %d points: n_trials lowered from %d to %d", size, self.n_trials, size)
            self.n_trials = size
        return sampler(grid)

    def _open_study(self, space: SearchSpace, directions: list[str]) -> SweepStudy:
        name = study_name(self.config)
        grace = int(self.settings.sweep.heartbeat_grace_seconds)
        # Multi-objective studies with a pruner were refused by check_sweep, before any run.
        pruner = make_pruner(self.settings.sweep.pruner) if len(directions) == 1 else None
        # Under the study's lock: of several workers starting together, exactly one creates the
        # study with the command's seed; the others find it and shift theirs.
        with self.store.lock(f"study:{name}"):
            sampler = self._make_sampler(space, existing_trials(self.store, name, grace))
            return SweepStudy(self.store, name, sampler, pruner, directions, grace)

    def _directions(self) -> list[str]:
        directions = self.directions
        return [str(d) for d in directions] if not isinstance(directions, str) else [directions]

    # ------------------------------------------------------------ the loop

    def sweep(self, arguments: list[str]) -> None:
        # The search space was checked by greenai's sweep callback before the MLflow run opened.
        space = parse_space([f"{k}={v}" for k, v in (self.params or {}).items()] + arguments)
        directions = self._directions()
        study = self._open_study(space, directions)
        try:
            self._loop(study, space)
        except StoreFull as exc:
            # The trial that met the full disk kept what could still be written and no further
            # trial is launched; the command ends with one line naming the store (greenai.train).
            self._save_if_possible(study, f"stopped: {exc}")
            raise

    def _loop(self, study: SweepStudy, space: SearchSpace) -> None:
        from greenai.sweep.packing import BatchEnergy  # torch, only once a sweep runs

        batch_energy = BatchEnergy.for_sweep(self.config, self.folder)
        batch_size = max(self.n_jobs, batch_energy.trials_per_gpu)
        study.recover_interrupted(set(space.distributions))
        # Job numbers continue the study's trial numbers, so output folders stay distinct.
        self.job_idx = study.count()
        failures = FailureBudget(self.max_failure_rate, self.n_trials)
        finished = study.count(*FINISHED)
        if finished:
            log.info("resuming: %d of %d trials already finished", finished, self.n_trials)
        while True:
            stop = stop_reason(self.settings.sweep, study)
            if stop:
                log.info("stopping: %s", stop)
                break
            trials, finished, _ = study.claim(batch_size, self.n_trials)
            if not trials:
                if finished >= self.n_trials:
                    break
                # Other workers' trials fill the study: wait, they may fail and need replacing.
                time.sleep(WAIT_SECONDS)
                study.recover_interrupted(set(space.distributions))
                continue
            failures.add(self._run_batch(study, space, trials, batch_energy))
            self._log_progress(study)
            if failures.exceeded:
                self._save(
                    study, f"aborted: {failures.failures} failed trials exceed max_failure_rate={self.max_failure_rate}"
                )
                raise RuntimeError(failures.message())
        self._save(study, stop or "completed")

    def _run_batch(self, study: SweepStudy, space: SearchSpace, trials: list[optuna.Trial], energy: Any) -> int:
        """Launch one batch, attribute its energy where trials shared a GPU, tell each trial's
        outcome; the number of failed trials."""
        extend = functools.partial(self.extend, self.config) if self.extend else None
        number, name = (settings_key(self.config, f"sweep.{key}") for key in ("trial_number", "study_name"))
        overrides = [(*space.overrides(t, extend), f"{number}={t.number}", f"{name}={study.name}") for t in trials]
        with launching():  # the sweep's ledger: the sweeper's own work lies between launches
            energy.begin()
            returns = self._launch(study, trials, overrides)
            attributed = energy.end(study, trials)
        full = [_store_full(r) for r in returns]
        states = [
            study.outcome(t, r, attributed.get(t.number)) if f is None else self._interrupt(study, t, f)
            for t, r, f in zip(trials, returns, full, strict=True)
        ]
        stopped = next((f for f in full if f is not None), None) or log_files.full()
        if stopped is not None:
            raise stopped  # the next job would meet the full disk too
        if any(isinstance(r, LostJob) for r in returns):
            study.recover_interrupted(set(space.distributions))  # run the lost points again, in this sweep
        return states.count(TrialState.FAIL)

    @staticmethod
    def _interrupt(study: SweepStudy, trial: optuna.Trial, full: StoreFull) -> None:
        """A trial whose job met a full disk: failed as interrupted if its job could not tell the
        study (its point runs again on resume), else left as the job told it."""
        try:
            study.settle([trial], f"interrupted: {failure_reason(full)}", grace=0.0)
        except StoreFull:
            pass  # the study is the full store: the next command finds the trial's process gone and does this

    def _launch(self, study: SweepStudy, trials: list[optuna.Trial], overrides: list[tuple[str, ...]]) -> list[Any]:
        redact_logs()  # the launcher logs each job's overrides, credentials in URLs included
        try:
            returns = list(self.launcher.launch(overrides, initial_job_idx=self.job_idx))
        except Exception as exc:
            # Hydra writes each job's files (.hydra/*.yaml) before the job starts: a full disk
            # there stops the sweep, its jobs' trials interrupted.
            stopped = folder_full("hydra.sweep.dir", self.folder.path.absolute(), exc)
            if stopped is not None:
                study.settle(trials, f"interrupted: {failure_reason(stopped)}", grace=0.0)
                raise stopped from exc
            # A job the cluster cancelled, timed out or lost: the sweep goes on. The other jobs
            # of the batch told the study their results themselves.
            reason = failure_reason(exc)
            log.warning("the launcher lost a job (%s); its trial is marked failed and the sweep goes on", reason)
            study.settle(trials, f"interrupted: the launcher lost its job ({reason})")
            returns = [LostJob(reason)] * len(trials)
        except BaseException:
            # Interrupted (Ctrl-C, SIGTERM): no trial stays RUNNING in the study.
            study.settle(trials, "interrupted: the sweep was stopped", grace=0.0)
            raise
        self.job_idx += len(trials)
        return returns

    def _log_progress(self, study: SweepStudy) -> None:
        line = f"{study.count(*FINISHED)}/{self.n_trials} trials finished, {study.spent_j() / 1000:.3f} kJ spent"
        if study.directions == 1 and study.count(TrialState.COMPLETE):
            best = study.study.best_trial
            line += f", best {best.value:.4f} at round {best.number + 1}"
        log.info(line)

    def _save(self, study: SweepStudy, stop_reason: str) -> None:
        self.folder.write_results(study.results(self.n_trials, stop_reason))

    def _save_if_possible(self, study: SweepStudy, stop_reason: str) -> None:
        """The results file, unless the sweep folder is the full disk (resuming rewrites it)."""
        try:
            self._save(study, stop_reason)
        except (OSError, StoreFull) as exc:
            log.debug("results not saved: %s", exc)


def _store_full(returned: Any) -> StoreFull | None:
    """The StoreFull a job ended with, if any. Hydra's JobReturn gives a failed job's error only
    by raising it, after a line on stderr: read as it was set."""
    if isinstance(returned, JobReturn) and returned.status is JobStatus.FAILED:
        error = getattr(returned, "_return_value", None)
        return error if isinstance(error, StoreFull) else None
    return None


# Hydra imports this module as it loads its plugins (the entry point in pyproject.toml), in every
# Hydra app: a user's app can then pick hydra/sweeper=greenai and compose `greenai: trial`.
register()
