"""Training prepared trials: one alone (its repeats one after another), or many fused.

Fused, every repeat of every trial in a group of one architecture is a member of one grouped
model (greenai.training.fusion), and every trial stays a first-class trial: its own MLflow run with
per-epoch metrics, its own Optuna trial told its own result.

- A trial with `repeats=R` contributes R members (seeds seed .. seed+R-1); member r's epoch e is
  logged at step r x epochs + e, as when its repeats train one after another.
- After each epoch every trial's members report, in step order; a pruned trial's members leave
  the group (the others train on), and it is recorded pruned with the energy it used. A member
  whose loss becomes NaN fails its trial (its other members leave too), with loop.fit's reason.
- Energy: each window measures the device once; members do equal work, so each gets an equal
  share of every window it was in (`energy_source=fused`, or `fused_estimated` on the CPU
  estimate), and a trial's energy is the sum of its members' shares. The group size is on the run.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna

from greenai.stores.waits import StoreFull
from greenai.training import fusion
from greenai.training.loop import EpochResult
from greenai.trial.figures import hyperparameters, run_repeats
from greenai.trial.record import TrialRecord, add_to_sweep_totals, job_return, objective, spent
from greenai.trial.setup import TrialSetup
from greenai.trial.study_link import Pruned, PrunedAt

log = logging.getLogger("greenai.train")


@dataclass
class PreparedTrial:
    """A trial ready to train: its setup and its open records."""

    setup: TrialSetup
    record: TrialRecord
    members: list[int] = field(default_factory=list)  # member ids in the group, repeat order
    ended: BaseException | None = None  # Pruned, or the error that failed it

    @property
    def done(self) -> bool:
        return self.ended is not None


def run_alone(trial: PreparedTrial) -> Any:
    """Train the trial's repeats one after another; what its job returns (its objective,
    PrunedAt, or the exception that failed it). A signal closes the run KILLED and is raised on."""
    setup, record = trial.setup, trial.record
    try:
        run_repeats(
            setup.config, setup.spec, setup.dataset, setup.meter, record.figures, record.epoch, record.optimizer
        )
    except BaseException as exc:
        # The energy spent is logged and the study told before the run closes as pruned,
        # failed or killed (a signal arrives here as KeyboardInterrupt).
        record.close(None, exc)
        if not isinstance(exc, Exception):
            raise
        if isinstance(exc, optuna.TrialPruned):
            log.info("%s: %s, after %s", setup.name, exc, spent(record.figures))
            # Returned, not raised: a pruned trial is no error (greenai's sweeper tells it PRUNED).
            return PrunedAt(len(record.figures.epochs))
        return exc
    values = objective(len(setup.config.objective.directions), record.figures)
    record.close(values, None)
    log.info("%s: accuracy %.4f, %s", setup.name, record.figures.accuracy, spent(record.figures))
    return job_return(values)


def members_of(trials: Sequence[PreparedTrial]) -> list[fusion.Member]:
    """The group's members, trial by trial and repeat by repeat; numbers each trial's ids."""
    members: list[fusion.Member] = []
    for trial in trials:
        config = trial.setup.config
        for repeat in range(config.repeats):
            trial.members.append(len(members))
            members.append(fusion.Member(config.seed + repeat, hyperparameters(config)))
    return members


def run_fused(trials: Sequence[PreparedTrial]) -> list[Any]:
    """Train the trials as one group; what each trial's job returns (its objective, PrunedAt,
    or the exception that failed it), in order. A signal (KeyboardInterrupt) closes every
    trial's run KILLED and is raised on."""
    first = trials[0].setup
    group = fusion.FusedGroup(first.spec, members_of(trials), first.device)
    epochs = first.config.epochs
    for trial in trials:
        trial.record.optimizer(group.hyperparameters(trial.members[0]))
        trial.record.run.metrics({"fused_group_size": float(len(group.members))})
    log.info("fused group of %d trials, %d members (%s)", len(trials), len(group.members), first.spec.name)

    def on_epoch(results: Mapping[int, EpochResult]) -> list[int]:
        dropped: list[int] = []
        for trial in trials:
            if trial.done or not any(m in results for m in trial.members):
                continue
            try:
                for repeat, member in enumerate(trial.members):
                    if member in results:
                        trial.record.figures.epochs.append(results[member])
                        trial.record.epoch(repeat * epochs + results[member].epoch, results[member])
            except Exception as exc:  # Pruned, or a store that failed: this trial ends, the group goes on
                trial.ended = exc
                dropped += [m for m in trial.members if m in results]
        return dropped

    try:
        runs = fusion.fit_group(
            group,
            first.dataset,
            epochs=epochs,
            batch_size=first.config.batch_size,
            meter=first.meter,
            on_epoch=on_epoch,
        )
    except BaseException as exc:
        for trial in trials:
            if not trial.done:
                trial.record.close(None, exc)
        raise
    outcomes: list[Any] = []
    for trial in trials:
        try:
            outcomes.append(_finish(trial, runs))
        except StoreFull as exc:  # the trial ends with it; the group's other trials are still closed
            outcomes.append(exc)
    try:
        ends = [o if isinstance(o, BaseException) else _pruned(o) for o in outcomes]
        add_to_sweep_totals([(t.record, end) for t, end in zip(trials, ends, strict=True)])
    except StoreFull as exc:  # each trial is recorded; each job says the disk is full, and the sweep stops
        outcomes = [o if isinstance(o, BaseException) else exc for o in outcomes]
    return outcomes


def _pruned(outcome: Any) -> BaseException | None:
    """What ended a trial whose job returned `outcome`, for the sweep's totals."""
    return Pruned("pruned") if isinstance(outcome, PrunedAt) else None


def _finish(trial: PreparedTrial, runs: Sequence[fusion.MemberRun]) -> Any:
    """Close the trial's records and say what its job returns."""
    figures = trial.record.figures
    diverged = [runs[m].error for m in trial.members if runs[m].state is fusion.MemberState.diverged]
    ended = trial.ended or (diverged[0] if diverged else None)
    if ended is not None:
        trial.record.close(None, ended, totals=False)
        if isinstance(ended, optuna.TrialPruned):
            log.info("%s: %s", trial.setup.name, ended)
            return PrunedAt(len(figures.epochs))
        log.warning("%s failed: %s", trial.setup.name, ended)
        return ended
    figures.accuracies += [runs[m].epochs[-1].test_accuracy for m in trial.members]
    values = objective(len(trial.setup.config.objective.directions), figures)
    trial.record.close(values, None, totals=False)
    log.info("%s: accuracy %.4f, %s", trial.setup.name, figures.accuracy, spent(figures))
    return job_return(values)
