"""Training prepared trials: one alone (its repeats one after another), or many fused.

Fused, every repeat of every trial in a group of one architecture is a member of one grouped
model (greenai.training.fusion), and every trial stays a first-class trial: its own MLflow run
with per-epoch metrics, its own Optuna trial told its own result.

- A trial with `repeats=R` contributes R members (seeds seed .. seed+R-1); member r's epoch e is
  logged at step r x epochs + e, as when its repeats train one after another.
- After each epoch every trial records all its members' results, in step order; if the pruner
  stops it, its members leave the group (the others train on), and it is recorded pruned with
  the energy it used. A member whose loss becomes NaN fails its trial (its other members leave
  too), with loop.fit's reason.
- Energy: each window measures the device once; members do equal work, so each gets an equal
  share of every window it was in (`energy_source=fused`, or `fused_estimated` on the CPU
  estimate), and a trial's energy is the sum of its members' shares: every joule of the group's
  windows reaches exactly one trial. As a group shrinks each survivor's share grows, so each
  epoch logs the group size it was shared by (`fused_group_size`) and the run its energy at each
  size (`fused_energy_j_size_K`, `fused_epochs_size_K`).

Both paths return one `Outcome` per trial (greenai.trial.outcome) and close the trial's
records with it; a signal (KeyboardInterrupt) closes every open trial KILLED and is raised on.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

from greenai.config import Precision, TrainConfig
from greenai.energy.meters import Measurement, Meter, window
from greenai.errors import StoreFull
from greenai.training import fusion, models, warmup
from greenai.training.augment import augmentation
from greenai.training.data import DeviceData
from greenai.training.inputs import TrainingData
from greenai.training.loop import EpochResult, Hyperparameters, RunState, TrainingRun, fit
from greenai.training.optim import (
    Applied,
    applied_hyperparameters,
    make_optimizer,
    make_schedule,
    settings_from,
    steps_per_epoch,
)
from greenai.training.precision import Amp
from greenai.trial.figures import TrialFigures
from greenai.trial.life import CLOSE, WARMUP, Life, Piece, piece
from greenai.trial.life import write as write_life
from greenai.trial.outcome import Failed, Finished, Outcome, PrunedAt
from greenai.trial.record import TrialRecord, add_to_sweep_totals, finished, spent
from greenai.trial.setup import TrialSetup

log = logging.getLogger("greenai.train")


@dataclass
class PreparedTrial:
    """A trial ready to train: its setup and its open records."""

    setup: TrialSetup
    record: TrialRecord
    members: list[int] = field(default_factory=list)  # member ids in the group, repeat order
    ended: Outcome | None = None  # PrunedAt or Failed, once it left its group early

    @property
    def done(self) -> bool:
        return self.ended is not None


def hyperparameters(cfg: TrainConfig) -> Hyperparameters:
    """A fused member's Adam values (fusion trains Adam only: setup.fusion_obstacle)."""
    return Hyperparameters(cfg.lr, cfg.beta1, cfg.beta2, cfg.eps, cfg.weight_decay)


class Recorder(Protocol):
    """What training a trial writes to: TrialRecord (a test may pass its own)."""

    figures: TrialFigures

    def optimizer(self, applied: Applied) -> None: ...

    def epoch(self, step: int, result: EpochResult) -> bool: ...

    def repeat_done(self, accuracy: float, energy_j: float | None = None) -> None: ...

    def records_done(self, windows: Sequence[Measurement]) -> None: ...

    def warmup(self, state: str, taken: Measurement | None = None) -> None: ...


def _ended(run: TrainingRun, record: Recorder) -> Outcome | None:
    """What a training that did not finish makes of its trial: pruned, or failed."""
    if run.state is RunState.stopped:
        return PrunedAt(len(record.figures.epochs))
    if run.state is RunState.diverged:
        assert run.error is not None
        return Failed(run.error)
    return None


WARMED_EARLIER = "already done in this process"


def warm(setup: TrialSetup, records: Sequence[Recorder], members: int | None = None) -> None:
    """The warm-up on a trial's shapes (a fused group's, of `members` members), before its first
    window (greenai.training.warmup): what the process pays once per shape is nobody's trial.
    Measured as a piece of the sweep's ledger where the trial has such pieces, else unmeasured
    and outside every window of the trial (energy off; a packed trial: its batch's overhead).
    Once per process and shape. A warm-up that fails is said, and the trial trains on: its
    first windows then pay what the warm-up would have. Each record says what became of it;
    the first one (whose setup holds the ledger's piece) carries its energy."""
    config = setup.config
    steps = config.energy.warmup_steps
    taken: Measurement | None = None
    if steps <= 0:
        state = "off"
    elif (shapes := warmup.shapes_of(config, setup.spec, setup.dataset, members or 1)) in warmup.WARMED:
        state = WARMED_EARLIER
    else:
        measured = getattr(setup, "startup", None) is not None
        try:
            with piece(setup.meter, WARMUP) if measured else contextlib.nullcontext() as warming:
                if members is None:
                    warmup.warm_up(config, setup.spec, setup.dataset, steps)
                else:
                    assert isinstance(setup.dataset, DeviceData), "only device-resident data fuses"
                    warmup.warm_up_group(setup.spec, members, setup.dataset, config.batch_size, steps)
        except Exception as exc:  # the trial meets the same problem, and fails or trains as it would have
            log.warning("%s: the warm-up failed (%s); its first windows pay what it would have", setup.name, exc)
            state = f"failed: {exc}"[:500]
        else:
            warmup.WARMED.add(shapes)
            state = "done" if members is None else f"done (a fused group of {members} members)"
            if isinstance(warming, Piece):
                setup.warmup, taken = warming, warming.taken
    for i, record in enumerate(records):
        record.warmup(state, taken if i == 0 else None)


def train_repeats(
    config: TrainConfig, spec: models.ArchitectureSpec, dataset: TrainingData, meter: Meter, record: Recorder
) -> Outcome:
    """`repeats` trainings one after another (seeds seed, seed+1, ...), each recorded as it goes."""
    device = dataset.device
    for repeat in range(config.repeats):
        seed = config.seed + repeat
        with window(meter, "setup") as built:  # the repeat's model and optimiser: part of the trial's life
            torch.manual_seed(seed)
            model = models.build(spec).to(device)
            optimizer = make_optimizer(model, settings_from(config))
            applied = applied_hyperparameters(optimizer)  # before a schedule changes the lr
            steps = steps_per_epoch(dataset.train_count, config.batch_size)
            schedule = make_schedule(config.scheduler, optimizer, config.epochs, steps)
            amp = Amp(config.precision.name, device)
        record.records_done([built.taken])
        if repeat == 0:
            record.optimizer(Applied.of(applied, schedule.params(), amp.params()))

        def on_epoch(results: Mapping[int, EpochResult], offset: int = repeat * config.epochs) -> list[int]:
            return [0] if record.epoch(offset + results[0].epoch, results[0]) else []

        run = fit(
            model,
            optimizer,
            dataset,
            epochs=config.epochs,
            batch_size=config.batch_size,
            seed=seed,
            meter=meter,
            on_epoch=on_epoch,
            augment=augmentation(config.dataset.augment, seed, device),
            amp=amp,
            schedule=schedule,
        )
        record.records_done(run.records)
        ended = _ended(run, record)
        if ended is not None:
            return ended
        own = [built.taken, *run.records, *(w for e in run.epochs for w in (e.train, e.eval))]
        record.repeat_done(run.epochs[-1].test_accuracy, _joules(own))
    return finished(len(config.objective.directions), record.figures)


def _joules(windows: Sequence[Measurement]) -> float | None:
    """A repeat's energy from its own windows (None where energy is off or attributed later)."""
    known = [w.total_j for w in windows if w.total_j is not None]
    return sum(known) if known else None


def run_alone(trial: PreparedTrial) -> Outcome:
    """Train the trial's repeats one after another; its outcome, once its records are closed."""
    setup, record = trial.setup, trial.record
    life = Life.begin()
    try:
        warm(setup, [record])
        life = Life.begin()  # after the warm-up, which is the process's, not the trial's
        outcome = train_repeats(setup.config, setup.spec, setup.dataset, setup.meter, record)
    except Exception as exc:  # a store that failed mid-trial, an error in the data: the trial fails
        outcome = Failed(exc)
    except BaseException as exc:  # a signal: the energy spent is logged, the run closed KILLED
        record.close(Failed(exc))
        raise
    life.end()
    with piece(setup.meter, CLOSE) as closing:
        record.close(outcome)
    write_life(setup, record.figures, life, closing)
    if not isinstance(outcome, Failed):  # a failure is the job's error: Hydra or the sweeper says it
        _log_end(trial, outcome)
    return outcome


def members_of(trials: Sequence[PreparedTrial]) -> list[fusion.Member]:
    """The group's members, trial by trial and repeat by repeat; numbers each trial's ids."""
    members: list[fusion.Member] = []
    for trial in trials:
        config = trial.setup.config
        for repeat in range(config.repeats):
            trial.members.append(len(members))
            members.append(fusion.Member(config.seed + repeat, hyperparameters(config)))
    return members


def _record_group_epoch(trial: PreparedTrial, results: Mapping[int, EpochResult], epochs: int) -> bool:
    """Every member's result of the epoch on the trial's record, in step order (all of them,
    whatever the pruner says after the first); whether the trial stops."""
    stop = False
    for repeat, member in enumerate(trial.members):
        if member in results:
            stop = trial.record.epoch(repeat * epochs + results[member].epoch, results[member]) or stop
    return stop


def run_fused(trials: Sequence[PreparedTrial]) -> list[Outcome]:
    """Train the trials as one group; each trial's outcome, in order, once its records are closed."""
    first = trials[0].setup
    assert isinstance(first.dataset, DeviceData), "only device-resident data fuses"
    try:  # the group's warm-up, measured on its first trial's ledger pieces
        warm(first, [t.record for t in trials], members=sum(t.setup.config.repeats for t in trials))
    except BaseException as exc:  # a signal: every trial's run is closed KILLED
        for trial in trials:
            trial.record.close(Failed(exc), totals=False)
        raise
    life = Life.begin()
    with window(first.meter, "setup") as built:  # the group's model and optimiser, shared by its members
        group = fusion.FusedGroup(first.spec, members_of(trials), first.device)
    for trial in trials:
        trial.record.records_done([built.taken.share(len(group.members))] * len(trial.members))
    epochs = first.config.epochs
    fp32 = Amp(Precision.fp32, first.device).params()  # a fused group trains in float32
    for trial in trials:
        trial.record.optimizer(Applied.of(group.hyperparameters(trial.members[0]), fp32))
    log.info("fused group of %d trials, %d members (%s)", len(trials), len(group.members), first.spec.name)

    def on_epoch(results: Mapping[int, EpochResult]) -> list[int]:
        stopped: list[int] = []
        for trial in trials:
            if trial.done or not any(m in results for m in trial.members):
                continue
            try:
                pruned = _record_group_epoch(trial, results, epochs)
            except Exception as exc:  # a store that failed: this trial ends, the group goes on
                trial.ended = Failed(exc)
            else:
                trial.ended = PrunedAt(len(trial.record.figures.epochs)) if pruned else None
            if trial.done:
                stopped += [m for m in trial.members if m in results]
        return stopped

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
                trial.record.close(Failed(exc), totals=False)
        raise
    life.end()
    outcomes = [_finish(trial, runs, life) for trial in trials]
    try:
        add_to_sweep_totals([(t.record, o.ending) for t, o in zip(trials, outcomes, strict=True)])
    except StoreFull as exc:  # each trial is recorded; each job says the disk is full, and the sweep stops
        outcomes = [o if isinstance(o, Failed) else Failed(exc) for o in outcomes]
    return outcomes


def _finish(trial: PreparedTrial, runs: Sequence[TrainingRun], life: Life) -> Outcome:
    """Close the trial's records (its group's life and its close on the sweep's ledger); its outcome."""
    record = trial.record
    record.records_done([window for m in trial.members for window in runs[m].records])
    diverged = [_ended(runs[m], record) for m in trial.members if runs[m].state is RunState.diverged]
    outcome = trial.ended or (diverged[0] if diverged else None)
    if outcome is None:
        for member in trial.members:  # members share each window equally: no spread of energy to show
            record.repeat_done(runs[member].epochs[-1].test_accuracy)
        outcome = finished(len(trial.setup.config.objective.directions), record.figures)
    try:
        with piece(trial.setup.meter, CLOSE) as closing:
            record.close(outcome, totals=False)
    except StoreFull as exc:  # the trial ends with it; the group's other trials are still closed
        return Failed(exc)
    write_life(trial.setup, record.figures, life, closing)
    if isinstance(outcome, Failed):  # the group trains on: say it here, not only in the job's result
        log.warning("%s failed: %s", trial.setup.name, outcome.error)
    else:
        _log_end(trial, outcome)
    return outcome


def _log_end(trial: PreparedTrial, outcome: Finished | PrunedAt) -> None:
    figures = trial.record.figures
    if isinstance(outcome, PrunedAt):
        log.info("%s: pruned after %d epochs, %s", trial.setup.name, outcome.epochs_run, spent(figures))
    else:
        log.info("%s: accuracy %.4f, %s", trial.setup.name, figures.accuracy, spent(figures))
