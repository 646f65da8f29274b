"""The sweep's Optuna study, as the sweeping process sees it: every storage call the sweeper
makes goes through `SweepStudy`, with Optuna's public API.

Trials are asked in batches under the store's lock, counting from one read of the study the
trials other workers run, so several workers on one study stop at exactly `n_trials`; a trial
asked past `n_trials` all the same (by a worker that did not take the lock) is failed as
surplus and never run. A trial whose process is gone (same host) or whose job stopped
recording heartbeats (database storages, any host) is failed; an interrupted point is queued
again, once.
"""

from __future__ import annotations

import bisect
import logging
import math
import time
from collections import Counter
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from greenai import names
from greenai.errors import failure_reason
from greenai.stores.owner import owner_alive, owner_id
from greenai.stores.redaction import redact
from greenai.stores.study_storage import deliberate_use, make_storage, study_trials, trial_id
from greenai.stores.url import StoreURL
from greenai.trial.outcome import PrunedAt
from greenai.trial.study_link import tell

log = logging.getLogger(__name__)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# How often a worker waiting on other workers' trials looks again.
WAIT_SECONDS = 2.0
# After a launcher loses a job, how long the batch's other jobs still running may take.
LOST_JOB_GRACE_SECONDS = 600.0


def existing_trials(store: StoreURL, name: str, grace_seconds: int) -> int | None:
    """How many trials the study `name` already has; None if there is no such study."""
    trials = study_trials(make_storage(store, grace_seconds), name)
    return None if trials is None else len(trials)


class SweepStudy:
    def __init__(
        self,
        store: StoreURL,
        name: str,
        sampler: optuna.samplers.BaseSampler,
        pruner: optuna.pruners.BasePruner | None,
        directions: list[str],
        grace_seconds: int,
    ) -> None:
        self.store = store
        self.storage = make_storage(store, grace_seconds)
        self.study = optuna.create_study(
            study_name=name,
            storage=self.storage,
            sampler=sampler,
            pruner=pruner,
            directions=directions,
            load_if_exists=True,
        )
        # optuna-dashboard and study.trials_dataframe() then say what each value is.
        metric_names = ["accuracy", "energy_j"][: len(directions)]
        if self.study.metric_names != metric_names:
            with deliberate_use():
                self.study.set_metric_names(metric_names)
        log.info("study %s in %s (%s, %s)", name, redact(store.url), type(sampler).__name__, "/".join(directions))

    @property
    def name(self) -> str:
        return self.study.study_name

    @property
    def directions(self) -> int:
        return len(self.study.directions)

    def trials(self, *states: TrialState) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False, states=states or None)

    def count(self, *states: TrialState) -> int:
        return len(self.trials(*states))

    def frozen(self, number: int) -> FrozenTrial:
        return self.storage.get_trial(trial_id(self.storage, self.name, number))

    def _set_attr(self, number: int, key: str, value: Any) -> None:
        self.storage.set_trial_user_attr(trial_id(self.storage, self.name, number), key, value)

    def set_attrs(self, number: int, values: dict[str, Any]) -> None:
        """User attributes on a trial that is still running (Optuna freezes finished ones)."""
        for key, value in values.items():
            self._set_attr(number, key, value)

    # ------------------------------------------------------------ recovering from dead jobs

    def recover_interrupted(self, space: set[str]) -> None:
        """Trials left RUNNING by a process of this host that is gone, and trials whose job
        stopped recording heartbeats, are failed; interrupted points are queued again, once:
        their point was never evaluated, and resuming must not skip it (a grid would)."""
        for trial in self.trials(TrialState.RUNNING):
            if owner_alive(trial.user_attrs.get(names.OWNER_ATTR)) is not False:
                continue
            self._set_attr(trial.number, names.FAILURE_ATTR, "interrupted: its process ended")
            self._set_attr(trial.number, names.INTERRUPTED_ATTR, True)
            tell(self.study, trial.number, state=TrialState.FAIL)
            log.warning("trial %d was left running by a process that ended: marked failed", trial.number)
        with deliberate_use():
            optuna.storages.fail_stale_trials(self.study)
        trials = self.trials()
        retried = {t.user_attrs.get(names.RETRY_ATTR) for t in trials}
        for trial in trials:
            interrupted = trial.state == TrialState.FAIL and trial.user_attrs.get(names.INTERRUPTED_ATTR)
            # Once only: a point interrupted again (a job that keeps timing out) is not retried.
            first_try = names.RETRY_ATTR not in trial.user_attrs
            if interrupted and first_try and trial.number not in retried and set(trial.params) == space:
                self.study.enqueue_trial(trial.params, user_attrs={names.RETRY_ATTR: trial.number})
                log.info("trial %d was interrupted: its point is queued again", trial.number)

    # ------------------------------------------------------------ asking and telling

    def claim(self, batch: int, n_trials: int) -> tuple[list[optuna.Trial], int, int]:
        """Ask up to `batch` trials, counting under the study's lock the trials other workers
        are running: (trials, finished, running before the ask)."""
        with self.store.lock(f"study:{self.name}"):
            # Both counts from one read: a trial another worker finishes between two reads would
            # be counted in neither, and one trial too many asked.
            states = Counter(t.state for t in self.trials())
            finished = sum(states[s] for s in FINISHED)
            running = states[TrialState.RUNNING]
            room = n_trials - finished - running
            with deliberate_use():
                trials = [self.study.ask() for _ in range(min(batch, room))] if room > 0 else []
            for trial in trials:
                trial.set_user_attr(names.OWNER_ATTR, owner_id())
            return self._within(trials, n_trials), finished, running

    def _within(self, asked: list[optuna.Trial], n_trials: int) -> list[optuna.Trial]:
        """The asked trials the budget allows; the others are failed as surplus, never run.
        A trial is allowed if fewer than `n_trials` trials numbered before it are not failed:
        the storage numbers trials atomically, so every process reads the same answer, and a
        trial that ends COMPLETE or PRUNED was never failed, so at most `n_trials` are. The
        lock makes a surplus rare; this holds where a worker asked without it."""
        if all(t.number < n_trials for t in asked):
            return asked  # fewer than n_trials trials at all are numbered before each: no read needed
        started = sorted(t.number for t in self.trials() if t.state != TrialState.FAIL)
        allowed = []
        for trial in asked:
            before = bisect.bisect_left(started, trial.number)
            if before < n_trials:
                allowed.append(trial)
                continue
            reason = f"surplus: {before} trials (n_trials={n_trials}) were started before it; not run"
            trial.set_user_attr(names.FAILURE_ATTR, reason)
            tell(self.study, trial, state=TrialState.FAIL)
            log.warning("trial %d: %s", trial.number, reason)
        return allowed

    def outcome(self, trial: optuna.Trial, returned: Any, attributed_j: float | None = None) -> TrialState:
        """The trial's outcome. Jobs tell the study themselves; this covers a job that died
        before it could, and packed trials of a two-objective study, whose energy is only known
        once the batch's energy is attributed (`attributed_j`). `returned` is Hydra's JobReturn
        (its return_value re-raises the job's exception)."""
        told = self.frozen(trial.number)
        if told.state.is_finished():
            if told.state == TrialState.FAIL:
                log.warning("trial %d failed: %s", trial.number, told.user_attrs.get(names.FAILURE_ATTR))
            return told.state
        try:
            value = returned.return_value
            if isinstance(value, PrunedAt):
                raise optuna.TrialPruned()
            values = [float(v) for v in (value if self.directions > 1 else [value])]
            if attributed_j is not None and self.directions > 1:
                values[1] = attributed_j
            if len(values) != self.directions or not all(math.isfinite(v) for v in values):
                raise ValueError(f"expected {self.directions} finite value(s), got {value!r}")
        except optuna.TrialPruned:
            tell(self.study, trial, state=TrialState.PRUNED)
            return TrialState.PRUNED
        except Exception as exc:
            reason = failure_reason(exc)
            trial.set_user_attr(names.FAILURE_ATTR, reason)
            tell(self.study, trial, state=TrialState.FAIL)
            log.warning("trial %d failed: %s", trial.number, reason)
            return TrialState.FAIL
        tell(self.study, trial, values=values)
        return TrialState.COMPLETE

    def settle(self, trials: list[optuna.Trial], reason: str, grace: float = LOST_JOB_GRACE_SECONDS) -> None:
        """Wait (up to `grace`) for the batch's jobs that may still run, then fail, as
        interrupted, the trials whose job is gone: their points are queued again on resume."""
        deadline = time.monotonic() + grace
        while True:
            running = [t for t in trials if self.frozen(t.number).state == TrialState.RUNNING]
            alive = [t for t in running if _job_alive(self.frozen(t.number))]
            if not alive or time.monotonic() >= deadline:
                break
            time.sleep(WAIT_SECONDS)
        for trial in running:
            if self.frozen(trial.number).state == TrialState.RUNNING:
                trial.set_user_attr(names.FAILURE_ATTR, reason)
                trial.set_user_attr(names.INTERRUPTED_ATTR, True)
                tell(self.study, trial, state=TrialState.FAIL)

    # ------------------------------------------------------------ what the study found

    def spent_j(self) -> float:
        """Energy the study's trials spent so far: their final figure, or, for a running trial,
        what it last reported (with an energy budget)."""
        return sum(figure(t, "energy_j", t.user_attrs.get(names.ENERGY_ATTR, 0.0)) or 0.0 for t in self.trials())

    def best_accuracy(self) -> float | None:
        done = [figure(t, "accuracy") for t in self.trials(TrialState.COMPLETE)]
        known = [a for a in done if a is not None]
        return max(known) if known else None

    def results(self, n_trials: int, stop_reason: str) -> dict[str, Any]:
        """What the sweep found, for the sweep folder's results file and the console."""
        counts = {
            state.name.lower(): self.count(state) for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        }
        results: dict[str, Any] = {
            "name": "optuna",
            "study_name": self.name,
            "storage": self.store.redacted,
            "n_trials": n_trials,
            "trials": counts,
            "stop_reason": stop_reason,
        }
        if counts["complete"] and self.directions == 1:
            best = self.study.best_trial
            results.update(best_params=best.params, best_value=best.value, best_round=best.number + 1)
            log.info("best value %s at round %d: %s", best.value, best.number + 1, best.params)
        elif counts["complete"]:
            results["solutions"] = [
                {"round": t.number + 1, "params": t.params, "values": t.values} for t in self.study.best_trials
            ]
            for t in self.study.best_trials:
                log.info("Pareto-optimal round %d: values %s, params %s", t.number + 1, t.values, t.params)
        return results


def figure(trial: FrozenTrial, key: str, default: float | None = None) -> float | None:
    """One of the final figures a job recorded on its trial (greenai.trial.study_link.record)."""
    return trial.user_attrs.get(names.FIGURES_ATTR, {}).get(key, default)


def _job_alive(trial: FrozenTrial) -> bool:
    """Whether a job has started on the trial and its process may still be running."""
    owner = trial.user_attrs.get(names.JOB_OWNER_ATTR)
    return owner is not None and owner_alive(owner) is not False
