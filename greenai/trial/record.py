"""What a trial records while it trains: its MLflow run (tags, params, the composed config, per-epoch
and final figures, how it ended), its Optuna trial (through the study link), and its line in the
sweep's running totals on the parent run.

The training code calls `TrialRecord.epoch` after each epoch, `repeat_done` after each repeat
and `close` once, with the trial's outcome; nothing else in a trial writes to MLflow or Optuna,
nor to the trial's figures. A fused group keeps one record per trial.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from importlib import metadata
from typing import Any

import torch
import yaml
from mlflow.entities import Metric

from greenai import names
from greenai.config import TrainConfig
from greenai.energy.idle import IdlePower
from greenai.energy.meters import Measurement, Meter
from greenai.errors import StoreFull
from greenai.stores import tracking
from greenai.stores.full_disk import folder_full
from greenai.stores.owner import owner_id
from greenai.stores.redaction import redact, redact_text
from greenai.stores.url import StoreURL
from greenai.training import devices, models
from greenai.training.loop import EpochResult, format_progress
from greenai.training.optim import Applied
from greenai.trial.figures import TrialFigures, epoch_metrics
from greenai.trial.job import JobContext
from greenai.trial.outcome import Finished, Outcome
from greenai.trial.study_link import StudyLink

log = logging.getLogger("greenai.train")
VERSIONED = ("greenai", "torch", "torchvision", "zeus", "mlflow", "hydra-core", "optuna")
# Keys whose values may hold credentials: logged redacted.
URL_KEYS = ("tracking.uri", "sweep.storage")


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def config_tree(config: TrainConfig) -> dict[str, Any]:
    """The typed config as plain nested values (enums by their value): what the run records.
    Read from the dataclasses directly: OmegaConf would take milliseconds a trial, which a
    fused batch of many trials feels."""

    def plain(value: Any) -> Any:
        if isinstance(value, Enum):
            return value.value
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(dataclasses.asdict(config))


def flat_params(tree: dict[str, Any]) -> dict[str, object]:
    """The job's config as dotted params, with credentials in URLs hidden."""
    flat = flatten(tree)
    for key in URL_KEYS:
        if isinstance(flat.get(key), str):
            flat[key] = redact(flat[key])
    return flat


@functools.cache
def architecture_summary(spec: models.ArchitectureSpec) -> dict[str, int]:
    """Parameters, MACs and layer counts: the same for every trial of one architecture."""
    return models.summarize(models.build(spec), spec.input_shape).as_dict()


@functools.cache
def versions() -> dict[str, object]:
    found: dict[str, object] = {"versions.python": platform.python_version()}
    for package in VERSIONED:
        try:
            found[f"versions.{package}"] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return found


def job_tags(job: JobContext) -> dict[str, object]:
    tags: dict[str, object] = {names.OUTPUT_DIR: job.output_dir}
    if job.multirun:
        tags.update({names.JOB_NUM: job.job_num, names.SWEEP_DIR: job.sweep_dir, names.ROUND: job.round})
    if job.searcher:
        tags[names.SEARCHER] = job.searcher
    if job.trial_number is not None:
        tags[names.TRIAL_NUMBER] = job.trial_number
        tags[names.STUDY] = job.study_name
    if job.parent_run_id:
        tags[names.PARENT] = job.parent_run_id
    return tags


def run_tags(
    job: JobContext, meter: Meter, device: torch.device, dataset_source: str, idle: IdlePower | None
) -> dict[str, object]:
    return ({names.IDLE_SOURCE: idle.source.value} if idle else {}) | {
        names.RUN_KIND: "trial",
        names.TRIAL_STATE: "running",
        names.OWNER: owner_id(),
        names.ENERGY_SOURCE: meter.source.value,
        names.ENERGY_DEVICE: meter.description,
        names.ENERGY_COMPONENTS: meter.components,
        "device": devices.describe(device),
        names.DATASET_FILES: dataset_source,
        **job_tags(job),
        **versions(),
    }


def finished(directions: int, figures: TrialFigures) -> Finished:
    """A finished trial's objective: accuracy, and energy (None while not yet known, as for a
    packed trial until its batch's energy is attributed) for two objectives."""
    if directions > 1:
        return Finished((figures.accuracy, figures.metrics()["energy_j"]))
    return Finished((figures.accuracy,))


def _written_unless_full(full: list[StoreFull], write: Callable[[], object]) -> bool:
    """write(), unless a store's disk is full: then the StoreFull joins `full` (the trial's
    other writes go on) and False is returned."""
    try:
        write()
    except StoreFull as exc:
        full.append(exc)
        return False
    return True


def spent(figures: TrialFigures) -> str:
    """The energy a trial spent, for its last console line."""
    joules = figures.metrics()["energy_j"]
    if joules is None:
        return "energy not measured" if figures.source.value == "off" else "energy attributed after the batch"
    return f"energy {joules:.1f} J ({figures.source.value})"


# Per-epoch metrics are written in batches, at the end of an epoch at least this long after the
# last write (and all of them when the run ends): a fused group's trials end their epochs in a
# fraction of a second, and each write costs one store transaction.
FLUSH_SECONDS = 5.0


@dataclass
class Pending:
    """What a run has still to write: params, metrics at their steps, tags."""

    params: dict[str, object] = field(default_factory=dict)
    metrics: list[Metric] = field(default_factory=list)
    tags: dict[str, object] = field(default_factory=dict)
    since: float = field(default_factory=time.monotonic)

    def take(self) -> tuple[dict[str, object], list[Metric], dict[str, object]]:
        taken = (self.params, self.metrics, self.tags)
        self.params, self.metrics, self.tags, self.since = {}, [], {}, time.monotonic()
        return taken


@dataclass
class TrialRecord:
    """One trial's MLflow run and Optuna trial while it trains."""

    run: tracking.RunLogger
    link: StudyLink
    name: str
    figures: TrialFigures
    job: JobContext
    epochs_total: int
    pending: Pending = field(default_factory=Pending)
    progress_note: str = ""  # the end of each progress line, e.g. that the data is streamed
    meter: Meter | None = None  # set by describe(): what it could not read is tagged at close

    @classmethod
    def open(
        cls,
        store: StoreURL,
        experiment: str,
        name: str,
        tags: dict[str, object],
        link: StudyLink,
        figures: TrialFigures,
        job: JobContext,
        epochs_total: int,
    ) -> TrialRecord:
        run = tracking.create_run(tracking.client(store), experiment, name, tags)
        link.attach(run.run_id)
        return cls(run, link, name, figures, job, epochs_total)

    def describe(self, config: TrainConfig, spec: models.ArchitectureSpec, meter: Meter) -> None:
        """What the run is: config, architecture, the composed config file, an estimate warning."""
        self.meter = meter
        summary = architecture_summary(spec)
        tree = config_tree(config)
        self.pending.params.update({**flat_params(tree), **{f"arch.{k}": v for k, v in summary.items()}})
        self.pending.metrics += tracking.metric_points(
            {f"arch_{k}": v for k, v in summary.items() if k in ("params", "macs_per_sample")}
        )
        if meter.source.is_estimated:
            self.pending.tags[names.NOTE] = f"Energy is ESTIMATED, not measured: {meter.description}"
        self.run.text(redact_text(yaml.safe_dump(tree, sort_keys=False)), "config.yaml")

    def optimizer(self, applied: Applied) -> None:
        """What the optimiser, schedule and precision really hold, read back from them."""
        self.pending.params.update(applied.params())

    def epoch(self, step: int, result: EpochResult) -> bool:
        """After each epoch: its figures kept, progress line, per-epoch metrics, the study told;
        whether the pruner stops the trial."""
        self.figures.epochs.append(result)
        log.info(format_progress(self.name, result, self.epochs_total, step, self.progress_note))
        self.pending.metrics += tracking.metric_points(epoch_metrics(result, self.figures.idle), step)
        if time.monotonic() - self.pending.since >= FLUSH_SECONDS:
            self.run.log(*self.pending.take())
        return self.link.report(step, result.test_accuracy, self.figures.metrics()["energy_j"])

    def repeat_done(self, accuracy: float, energy_j: float | None = None) -> None:
        """A repeat trained every epoch: its final test accuracy counts in the trial's, and its own
        energy (None where its windows were shared) in the spread of the trial's."""
        self.figures.accuracies.append(accuracy)
        self.figures.repeat_energies.append(energy_j)

    def records_done(self, windows: Sequence[Measurement]) -> None:
        """The windows around the trial's records between epochs: part of its energy."""
        self.figures.records.extend(windows)

    def warmup(self, state: str, taken: Measurement | None = None) -> None:
        """The warm-up before the trial's first window (greenai.trial.runner.warm): what became
        of it, and its window where it was measured (the sweep's overhead, not the trial's)."""
        self.pending.tags[names.WARMUP] = state
        if taken is not None:
            self.pending.metrics += tracking.metric_points(
                {"warmup_energy_j": taken.total_j, "warmup_seconds": taken.seconds}
            )

    def close(self, outcome: Outcome, totals: bool = True) -> None:
        """The trial's figures, kept whatever stopped it, then how it ended, on both records.

        A store whose disk is full (StoreFull) does not stop the other from taking its part:
        each write is tried on its own, the trial then ends as stopped by the full store (MLflow
        KILLED, Optuna FAIL marked interrupted, wherever that can still be written), and the
        first StoreFull is raised once everything else is written."""
        exc = outcome.ending
        values = list(outcome.values) if isinstance(outcome, Finished) else None
        final = self.figures.metrics()
        if final.get("net_energy_negative"):
            log.warning(
                "%s: net energy %.1f J is below zero (gross energy under idle power x time): kept and flagged "
                "net_energy_negative=1",
                self.name,
                final["net_energy_j"],
            )
        params, metrics, tags = self.pending.take()
        tags.update(
            {names.ENERGY_SOURCE: self.figures.source.value, **self._approximations(), **tracking.ending_tags(exc)}
        )
        full: list[StoreFull] = []
        # MLflow first: what was measured is kept even if the process dies before the study is told.
        logged = _written_unless_full(full, lambda: self.run.log(params, metrics + tracking.metric_points(final), tags))
        _written_unless_full(full, lambda: self.link.record(final))
        ended = full[0] if full else exc
        _written_unless_full(full, lambda: self.link.finish(None if ended is not None else values, ended))
        ended = full[0] if full else exc
        if full and logged:  # MLflow took the ending `exc` gave; a full disk stopped the trial instead
            _written_unless_full(full, lambda: self.run.tags(tracking.ending_tags(ended)))
        _written_unless_full(full, lambda: tracking.terminate(self.run, ended))
        if totals:  # a fused group adds its trials together, once
            _written_unless_full(full, lambda: add_to_sweep_totals([(self, ended)]))
        if full:
            raise full[0]

    def _approximations(self) -> dict[str, str]:
        """Tags on what the run's windows could not read exactly: short windows, RAPL readings
        re-derived across a wrap-around, counters that stopped being read mid-run."""
        windows = len(self.figures.epochs) * 2
        tags: dict[str, str] = {}
        notes: list[str] = []
        short, rederived = self.figures.approximate_windows, self.figures.rederived_windows
        if short:
            tags[names.APPROXIMATE_WINDOWS] = f"{short}/{windows}"
            notes.append(
                f"{short} of {windows} energy windows were shorter than 10 counter periods: each of those figures "
                "is approximate (within one counter step, right on average); the run's totals are exact to one step."
            )
        if rederived:
            tags[names.REDERIVED_WINDOWS] = f"{rederived}/{windows}"
            notes.append(f"{rederived} RAPL readings were corrected for a wrap-around Zeus had miscounted.")
        unread = getattr(getattr(self.meter, "counters", None), "unread", None)
        if unread:
            tags[names.NOT_MEASURED] = "; ".join(f"{k}: {v}" for k, v in sorted(unread.items()))
        if notes:
            tags[names.NOTE] = " ".join(notes)
        return tags

    def progress(self, exc: BaseException | None) -> dict[str, object]:
        """The trial's line in the sweep's progress file."""
        final = self.figures.metrics()
        return {
            "round": self.job.round,
            "state": tracking.end_state(exc)[1],
            "accuracy": final.get("accuracy"),
            "energy_j": final.get("energy_j"),
        }


def add_to_sweep_totals(records: list[tuple[TrialRecord, BaseException | None]]) -> None:
    """The sweep's parent run shows trials done, energy so far and best accuracy so far as trials
    end (read from the sweep folder, which every job of the sweep shares): once per trial, or
    once for a fused group's trials."""
    if not records:
        return
    first = records[0][0]
    folder, parent = first.job.sweep_folder, first.job.parent_run_id
    if folder is None or parent is None:
        return
    try:
        totals = folder.add_progress(*(record.progress(exc) for record, exc in records))
    except OSError as error:
        stopped = folder_full("hydra.sweep.dir", folder.path, error)
        if stopped is None:
            raise
        raise stopped from error
    tracking.RunLogger(first.run.mlflow, parent).metrics(
        {
            "sweep_trials_done": totals["trials"],
            "sweep_energy_so_far_j": totals["energy_j"],
            "sweep_best_accuracy_so_far": totals["best_accuracy"],
        },
        step=int(totals["trials"]),
    )
