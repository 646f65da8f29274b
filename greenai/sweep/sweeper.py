"""greenai's Optuna sweeper: the hydra-optuna-sweeper plugin, extended through subclassing.

What it adds to the plugin:
- resume: `n_trials` counts the study's finished (complete or pruned) trials, so rerunning a
  command continues its study; trials a dead process left RUNNING are marked failed first;
- each job learns its study and trial number (`sweep.study_name`, `sweep.trial_number`), so it
  can report per-epoch accuracy to the pruner and record its energy on the trial;
- pruned trials (the job raised `optuna.TrialPruned`) are told as PRUNED, failed ones as FAIL
  with the reason kept on the trial; `max_failure_rate` bounds failures over the whole sweep;
- grid search over continuous ranges: `grid_points` evenly spaced values per parameter, the
  upper bound left out (the paper's grid), in log space for `tag(log, ...)` intervals;
- the search space is checked before the first trial: every bound is composed into a job
  config and refused with one line if training could not take it;
- stops: an energy budget (`sweep.energy_budget_kj`) and an accuracy target
  (`sweep.target_accuracy`), checked before each new batch of trials.
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
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl, create_params_from_overrides
from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from greenai.errors import GreenAIError, fail
from greenai.locks import store_lock
from greenai import tracking
from greenai.sweep import packing, study_link
from greenai.sweep.study_link import make_pruner, make_storage, study_trials, tell
from greenai.sweep.naming import study_name as default_study_name
from greenai.sweep.owner import owner_alive, owner_id
from greenai.sweep.preflight import check_jobs
from greenai.redaction import redact, redact_logs
from greenai.tracking import resolve_uri

log = logging.getLogger(__name__)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# Overrides greenai's sweeper sets itself for every job.
JOB_KEYS = ("sweep.trial_number", "sweep.study_name")
MAX_SPACE_CHECKS = 200
# How often a worker whose study is full of other workers' running trials looks again.
WAIT_FOR_OTHERS_SECONDS = 2.0
# After a launcher loses a job, how long the batch's other jobs still running may take.
LOST_JOB_GRACE_SECONDS = 600.0


@dataclass(frozen=True)
class LostJob:
    """Stands for the result of a job the launcher could not return (cancelled, timed out)."""

    reason: str

    @property
    def return_value(self) -> Any:
        raise RuntimeError(self.reason)


@dataclass
class GreenOptunaSweeperConf(OptunaSweeperConf):
    _target_: str = "greenai.sweep.sweeper.GreenOptunaSweeper"
    # Read from the task config, so the objective group and `sweep.*` settle them.
    direction: Any = "${objective.directions}"
    storage: Any = "${sweep.storage}"
    study_name: Any = "${sweep.study_name}"
    # One trial at a time: a sequential sampler sees each result before the next ask.
    n_jobs: int = 1
    # Failed trials allowed, as a fraction of n_trials over the whole sweep.
    max_failure_rate: float = 0.5
    grid_points: int = 5


def register() -> None:
    ConfigStore.instance().store(group="hydra/sweeper", name="greenai", node=GreenOptunaSweeperConf, provider="greenai", replace=True)


def grid_values(distribution: BaseDistribution, points: int) -> list[Any]:
    """A parameter's grid: its choices, its integer steps, or `points` evenly spaced values
    of a continuous range with the upper bound left out (log-spaced for log ranges)."""
    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    if isinstance(distribution, IntDistribution):
        return list(range(distribution.low, distribution.high + 1, distribution.step))
    assert isinstance(distribution, FloatDistribution)
    if distribution.step is not None:
        return OptunaSweeperImpl._to_grid_sampler_choices(distribution)
    low, high = distribution.low, distribution.high
    if distribution.log:
        ratio = math.log(high / low)
        values = [low * math.exp(ratio * i / points) for i in range(points)]
    else:
        values = [low + (high - low) * i / points for i in range(points)]
    # 12 significant digits: 0.28, not 0.28000000000000003, in overrides and run names.
    return [float(f"{v:.12g}") for v in values]


def half_open(distribution: BaseDistribution) -> BaseDistribution:
    """A continuous `interval(low, high)` searched as [low, high): its upper bound is never
    sampled. Gaussian-process samplers do land on bounds, and Adam takes no beta = 1 (the
    paper's beta ranges end at 1; its grid also left the upper bound out)."""
    if isinstance(distribution, FloatDistribution) and distribution.step is None and distribution.low < distribution.high:
        high = math.nextafter(distribution.high, distribution.low)
        return FloatDistribution(distribution.low, high, log=distribution.log)
    return distribution


def probe_values(distribution: BaseDistribution) -> list[Any]:
    """Values that stand for a whole range in the pre-flight check: its ends (or choices)."""
    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    assert isinstance(distribution, (IntDistribution, FloatDistribution))
    return [distribution.low, distribution.high]


def parse_space(params_conf: list[str]) -> tuple[dict[str, BaseDistribution], dict[str, Any], list[str]]:
    """Search space, fixed params and fixed overrides, as the plugin reads them, with greenai's
    rules: continuous ranges half-open, its own job keys dropped, errors in one line."""
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
        fail("hydra.sweeper.params: the search space is empty; add space=paper3 (or paper5, rq2) or sweep a parameter, e.g. lr='interval(1e-5,1e-1)'")
    return {name: half_open(dist) for name, dist in space.items()}, fixed, fixed_overrides


def sweep_params(config: DictConfig) -> list[str]:
    """The sweeper's `params` plus the command line's task overrides, as the sweep sees them."""
    params = config.hydra.sweeper.params or {}
    task = OmegaConf.to_container(config.hydra.overrides.task, resolve=False)
    assert isinstance(task, list)
    return [f"{k}={v}" for k, v in params.items()] + task


def check_space(config: DictConfig) -> None:
    """Compose a job at each end of each range (each choice) and refuse what training cannot take."""
    if config.sweep.pruner and len(config.objective.directions) > 1:
        fail("pruner: Optuna cannot prune a multi-objective study (objective=accuracy_energy); use pruner=none")
    space, fixed, fixed_overrides = parse_space(sweep_params(config))
    base = [f"{k}={v}" for k, v in fixed.items()] + list(fixed_overrides)
    probes = [[*base, f"{name}={value}"] for name, dist in space.items() for value in probe_values(dist)]
    try:
        check_jobs(config, probes[:MAX_SPACE_CHECKS])
    except GreenAIError as exc:
        fail(f"search space: {exc}")


def _job_alive(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a job has started on the trial and its process may still be running."""
    owner = trial.user_attrs.get(study_link.JOB_OWNER_ATTR)
    return owner is not None and owner_alive(owner) is not False


class GreenOptunaSweeperImpl(OptunaSweeperImpl):
    def __init__(self, *args: Any, grid_points: int) -> None:
        super().__init__(*args)
        self.grid_points = grid_points
        # Packed trials' attributed energy by trial number: their own figures overlap.
        self.attributed: dict[int, float] = {}

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        if not self.storage:
            fail("sweep.storage: greenai's sweeper needs a study storage (default sqlite:///optuna.db; any SQLAlchemy URL)")
        self.storage = resolve_uri(str(self.storage), config.hydra.runtime.cwd)

    # ------------------------------------------------------------ search space

    def _search_space(self, arguments: list[str]) -> tuple[dict[str, BaseDistribution], dict[str, Any], list[str]]:
        self._process_searchspace_config()
        return parse_space(self._parse_sweeper_params_config() + arguments)

    def _make_sampler(self, space: dict[str, BaseDistribution], trials_so_far: int | None) -> Any:
        """The configured sampler, seeded by `seed` for a new study: the same command samples
        the same trials. Reopening an existing study (resuming it, or a worker joining others
        on it) shifts the seed by the trials already there and by this process, so a resumed
        or parallel random sweep does not replay points already run or being run."""
        config = OmegaConf.create(OmegaConf.to_container(self.sampler, resolve=True))
        if trials_so_far is not None and config.get("seed") is not None:
            config.seed = (int(config.seed) + trials_so_far + 7919 * os.getpid()) % 2**32
        sampler = instantiate(config, _execution_whitelist_=("hydra_plugins.hydra_optuna_sweeper.*", "optuna.samplers.*"))
        is_grid = isinstance(sampler, functools.partial) and sampler.func == optuna.samplers.GridSampler
        if not is_grid:
            return sampler
        grid = {name: grid_values(dist, self.grid_points) for name, dist in space.items()}
        size = math.prod(len(v) for v in grid.values())
        if self.n_trials > size:
            log.info("grid of %d points: n_trials lowered from %d to %d", size, self.n_trials, size)
            self.n_trials = size
        return sampler(grid)

    # ------------------------------------------------------------ the study

    def _open_study(self, space: dict[str, BaseDistribution], directions: list[str]) -> optuna.Study:
        name = default_study_name(self.config)
        existing = study_trials(self.storage, name)
        sampler = self._make_sampler(space, None if existing is None else len(existing))
        study = optuna.create_study(
            study_name=name, storage=make_storage(self.storage), sampler=sampler, pruner=self._pruner(directions),
            directions=directions, load_if_exists=True,
        )
        log.info("study %s in %s (%s, %s)", name, redact(str(self.storage)), type(sampler).__name__, "/".join(directions))
        return study

    def _pruner(self, directions: list[str]) -> optuna.pruners.BasePruner | None:
        # Multi-objective studies with a pruner were refused by check_space, before any run.
        return make_pruner(self.config.sweep.pruner) if len(directions) == 1 else None

    @staticmethod
    def _recover_interrupted(study: optuna.Study, space: dict[str, BaseDistribution]) -> None:
        """Trials left RUNNING by a process that is gone are failed; those and the ones a
        signal interrupted are queued again, once: their point was never evaluated, and
        resuming must not skip it (a grid would)."""
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if owner_alive(trial.user_attrs.get(study_link.OWNER_ATTR)) is not False:
                continue
            study._storage.set_trial_user_attr(trial._trial_id, study_link.FAILURE_ATTR, "interrupted: its process ended")
            study._storage.set_trial_user_attr(trial._trial_id, study_link.INTERRUPTED_ATTR, True)
            tell(study, trial.number, state=TrialState.FAIL)
            log.warning("trial %d was left running by a process that ended: marked failed", trial.number)
        trials = study.get_trials(deepcopy=False)
        retried = {t.user_attrs.get(study_link.RETRY_ATTR) for t in trials}
        for trial in trials:
            interrupted = trial.state == TrialState.FAIL and trial.user_attrs.get(study_link.INTERRUPTED_ATTR)
            # Once only: a point interrupted again (a job that keeps timing out) is not retried.
            first_try = study_link.RETRY_ATTR not in trial.user_attrs
            if interrupted and first_try and trial.number not in retried and set(trial.params) == set(space):
                study.enqueue_trial(trial.params, user_attrs={study_link.RETRY_ATTR: trial.number})
                log.info("trial %d was interrupted: its point is queued again", trial.number)

    @staticmethod
    def _count(study: optuna.Study, states: tuple[TrialState, ...]) -> int:
        return len(study.get_trials(deepcopy=False, states=states))

    def _stop_reason(self, study: optuna.Study) -> str | None:
        sweep = self.config.sweep
        trials = study.get_trials(deepcopy=False)
        waiting = any(t.state == TrialState.WAITING for t in trials)
        if isinstance(study.sampler, optuna.samplers.GridSampler) and study.sampler.is_exhausted(study) and not waiting:
            return "every grid point has been tried"
        if sweep.energy_budget_kj is not None:
            spent = self._spent_j(trials) / 1000
            if spent >= sweep.energy_budget_kj:
                return f"energy budget of {sweep.energy_budget_kj} kJ reached ({spent:.3f} kJ spent)"
        if sweep.target_accuracy is not None:
            done = [t for t in trials if t.state == TrialState.COMPLETE]
            best = max((t.user_attrs.get("accuracy", float("-inf")) for t in done), default=float("-inf"))
            if best >= sweep.target_accuracy:
                return f"target accuracy {sweep.target_accuracy} reached ({best:.4f})"
        return None

    # ------------------------------------------------------------ running trials

    def _job_overrides(self, trials: list[optuna.Trial], space: dict[str, BaseDistribution], fixed: dict[str, Any], fixed_overrides: list[str], study: optuna.Study) -> list[tuple[str, ...]]:
        per_trial = self._configure_trials(trials, space, fixed, fixed_overrides)
        return [
            (*overrides, f"sweep.trial_number={trial.number}", f"sweep.study_name={study.study_name}")
            for trial, overrides in zip(trials, per_trial)
        ]

    def _tell(self, study: optuna.Study, trial: optuna.Trial, ret: Any, directions: list[str]) -> TrialState:
        """The trial's outcome. Jobs tell the study themselves; this covers a job that died
        before it could (and keeps the plugin's checks of what a job returned)."""
        told = study._storage.get_trial(trial._trial_id)
        if told.state.is_finished():
            if told.state == TrialState.FAIL:
                log.warning("trial %d failed: %s", trial.number, told.user_attrs.get(study_link.FAILURE_ATTR))
            return told.state
        try:
            returned = ret.return_value  # re-raises the job's exception
            if isinstance(returned, study_link.PrunedAt):
                raise optuna.TrialPruned()
            values = [float(v) for v in (returned if len(directions) > 1 else [returned])]
            if len(values) != len(directions) or not all(math.isfinite(v) for v in values):
                raise ValueError(f"expected {len(directions)} finite value(s), got {returned!r}")
        except optuna.TrialPruned:
            tell(study, trial, state=TrialState.PRUNED)
            return TrialState.PRUNED
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
            trial.set_user_attr(study_link.FAILURE_ATTR, reason)
            tell(study, trial, state=TrialState.FAIL)
            log.warning("trial %d failed: %s", trial.number, reason)
            return TrialState.FAIL
        tell(study, trial, values=values)
        return TrialState.COMPLETE

    def _launch(self, study: optuna.Study, trials: list[optuna.Trial], overrides: list[tuple[str, ...]]) -> list[Any]:
        redact_logs()  # the launcher logs each job's overrides, credentials in URLs included
        try:
            returns = list(self.launcher.launch(overrides, initial_job_idx=self.job_idx))
        except Exception as exc:
            # A job the cluster cancelled, timed out or lost: the sweep goes on. The other jobs
            # of the batch told the study their results themselves.
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            log.warning("the launcher lost a job (%s); its trial is marked failed and the sweep goes on", reason)
            self._settle(study, trials, f"interrupted: the launcher lost its job ({reason})")
            returns = [LostJob(reason)] * len(trials)
        except BaseException:
            # Interrupted (Ctrl-C, SIGTERM): no trial stays RUNNING in the study.
            self._settle(study, trials, "interrupted: the sweep was stopped", grace=0.0)
            raise
        self.job_idx += len(trials)
        return returns

    @staticmethod
    def _settle(study: optuna.Study, trials: list[optuna.Trial], reason: str, grace: float = LOST_JOB_GRACE_SECONDS) -> None:
        """Wait (up to `grace`) for the batch's jobs that may still run, then fail, as
        interrupted, the trials whose job is gone: their points are queued again on resume."""
        deadline = time.monotonic() + grace
        while True:
            running = [t for t in trials if study._storage.get_trial(t._trial_id).state == TrialState.RUNNING]
            if not any(_job_alive(study._storage.get_trial(t._trial_id)) for t in running) or time.monotonic() >= deadline:
                break
            time.sleep(WAIT_FOR_OTHERS_SECONDS)
        for trial in running:
            if study._storage.get_trial(trial._trial_id).state == TrialState.RUNNING:
                trial.set_user_attr(study_link.FAILURE_ATTR, reason)
                trial.set_user_attr(study_link.INTERRUPTED_ATTR, True)
                tell(study, trial, state=TrialState.FAIL)

    def _claim(self, study: optuna.Study) -> tuple[list[optuna.Trial], int, int]:
        """Ask the next batch of trials, counting under the study's lock the trials other
        workers are running: several processes on one study stop at exactly n_trials."""
        with store_lock(str(self.storage), f"study:{study.study_name}"):
            finished = self._count(study, FINISHED)
            running = self._count(study, (TrialState.RUNNING,))
            room = self.n_trials - finished - running
            trials = [study.ask() for _ in range(min(self.n_jobs, room))] if room > 0 else []
            for trial in trials:
                trial.set_user_attr(study_link.OWNER_ATTR, owner_id())
        return trials, finished, running

    def _attribute(self, study: optuna.Study, trials: list[optuna.Trial], window_j: float | None) -> None:
        """Packed trials: give each its share of the batch's GPU energy (greenai.sweep.packing)."""
        if window_j is None:
            return
        frozen = [study._storage.get_trial(t._trial_id) for t in trials]
        shares = packing.attribute(window_j, [f.user_attrs.get("busy_seconds", 0.0) for f in frozen])
        uri = resolve_uri(str(self.config.tracking.uri), self.config.hydra.runtime.cwd)
        for trial, share in zip(frozen, shares):
            self.attributed[trial.number] = share
            overlapping = trial.user_attrs.get(study_link.ENERGY_ATTR)
            run_id = trial.user_attrs.get(study_link.MLFLOW_RUN_ATTR)
            if run_id:
                run = tracking.RunLogger(tracking.client(uri), run_id)
                run.metrics({"energy_j": share, "overlapping_energy_j": overlapping, "batch_window_energy_j": window_j})
                run.tags({"energy_source": "attributed", "energy_attribution": packing.RULE})
            log.info("trial %d: %.1f J attributed of the batch's %.1f J (it measured %.1f J overlapping)",
                     trial.number, share, window_j, overlapping or 0.0)

    def sweep(self, arguments: list[str]) -> None:
        # The search space was checked by greenai's sweep callback before the MLflow run opened.
        space, fixed, fixed_overrides = self._search_space(arguments)
        directions = self._get_directions()
        trials_per_gpu = int(self.config.sweep.trials_per_gpu)
        self.n_jobs = max(self.n_jobs, trials_per_gpu)
        gpu = packing.window_meter(trials_per_gpu)
        study = self._open_study(space, directions)
        self._recover_interrupted(study, space)
        # Job numbers continue the study's trial numbers, so output folders stay distinct.
        self.job_idx = len(study.get_trials(deepcopy=False))
        allowed_failures = self.max_failure_rate * self.n_trials
        failures, stop = 0, None
        finished = self._count(study, FINISHED)
        if finished:
            log.info("resuming: %d of %d trials already finished", finished, self.n_trials)
        while True:
            stop = self._stop_reason(study)
            if stop:
                log.info("stopping: %s", stop)
                break
            trials, finished, running = self._claim(study)
            if not trials:
                if finished >= self.n_trials:
                    break
                # Other workers' trials fill the study: wait, they may fail and need replacing.
                time.sleep(WAIT_FOR_OTHERS_SECONDS)
                self._recover_interrupted(study, space)
                continue
            if gpu:
                gpu.begin("batch")
            returns = self._launch(study, trials, self._job_overrides(trials, space, fixed, fixed_overrides, study))
            self._attribute(study, trials, gpu.end("batch").total_j if gpu else None)
            states = [self._tell(study, t, r, directions) for t, r in zip(trials, returns)]
            if any(isinstance(r, LostJob) for r in returns):
                self._recover_interrupted(study, space)  # run the lost points again, in this sweep
            failures += states.count(TrialState.FAIL)
            self._log_progress(study, self._count(study, FINISHED), directions)
            if failures > allowed_failures:
                self._save(study, directions, f"aborted: {failures} failed trials exceed max_failure_rate={self.max_failure_rate}")
                raise RuntimeError(f"{failures} trials failed, more than max_failure_rate={self.max_failure_rate} x n_trials={self.n_trials} allows")
        self._save(study, directions, stop or "completed")

    def _spent_j(self, trials: list[optuna.trial.FrozenTrial]) -> float:
        """Energy the study's trials spent (attributed shares for packed trials)."""
        return sum(self.attributed.get(t.number, t.user_attrs.get(study_link.ENERGY_ATTR, 0.0)) for t in trials)

    def _log_progress(self, study: optuna.Study, finished: int, directions: list[str]) -> None:
        spent = self._spent_j(study.get_trials(deepcopy=False)) / 1000
        line = f"{finished}/{self.n_trials} trials finished, {spent:.3f} kJ spent"
        if len(directions) == 1 and self._count(study, (TrialState.COMPLETE,)):
            best = study.best_trial
            line += f", best {best.value:.4f} at round {best.number + 1}"
        log.info(line)

    def _save(self, study: optuna.Study, directions: list[str], stop_reason: str) -> None:
        counts = {state.name.lower(): self._count(study, (state,)) for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
        results: dict[str, Any] = {
            "name": "optuna",
            "study_name": study.study_name,
            "storage": redact(str(self.storage)),
            "n_trials": self.n_trials,
            "trials": counts,
            "stop_reason": stop_reason,
        }
        if counts["complete"] and len(directions) == 1:
            best = study.best_trial
            results.update(best_params=best.params, best_value=best.value, best_round=best.number + 1)
            log.info("best value %s at round %d: %s", best.value, best.number + 1, best.params)
        elif counts["complete"]:
            results["solutions"] = [{"round": t.number + 1, "params": t.params, "values": t.values} for t in study.best_trials]
            for t in study.best_trials:
                log.info("Pareto-optimal round %d: values %s, params %s", t.number + 1, t.values, t.params)
        OmegaConf.save(OmegaConf.create(results), f"{self.config.hydra.sweep.dir}/optimization_results.yaml")


class GreenOptunaSweeper(Sweeper):
    """Hydra's entry point for `hydra/sweeper=greenai` (selected by `searcher=...`)."""

    def __init__(self, sampler: Any, direction: Any, storage: Any, study_name: Any, n_trials: int, n_jobs: int,
                 max_failure_rate: float, custom_search_space: str | None, params: DictConfig | None,
                 grid_points: int = 5) -> None:
        # The sampler stays a config until the study is opened (see _make_sampler).
        self.impl = GreenOptunaSweeperImpl(
            sampler, direction, storage, study_name, n_trials, n_jobs, max_failure_rate, custom_search_space, params,
            grid_points=grid_points,
        )

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        return self.impl.sweep(arguments)
