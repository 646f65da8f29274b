"""One trial of a user's own training loop (greenai.api: `greenai.Trial`, the Lightning callback).

The loop is the app's; greenai's trial layer does the rest, as for its own trial: the settings
checked (app_settings), the job, device, meter, idle power and link to the Optuna trial, the
MLflow run (tags, the app's config as params), per-epoch energy windows and metrics, the
pruner's decision after each epoch, and the run and study closed with the trial's outcome
(TrialRecord.close). The app reports its own metrics; `greenai.metric` names the one that is the
trial's result, recorded as `accuracy` where greenai's sweep totals, stop rules and report read it.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna
import torch
import yaml
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from greenai import names
from greenai.config import without_hydra
from greenai.energy.idle import idle_power
from greenai.energy.meters import Measurement, Meter, Source, combined_source, make_meter
from greenai.errors import ConfigError
from greenai.stores import sweep_stop, tracking
from greenai.stores.reachability import check_reachable
from greenai.stores.redaction import redact, redact_text
from greenai.stores.url import StoreURL
from greenai.training import devices
from greenai.training.loop import EpochResult
from greenai.trial.app_settings import AppSettings, to_settings
from greenai.trial.figures import TrialFigures, epoch_metrics
from greenai.trial.job import JobContext
from greenai.trial.outcome import Failed, Outcome, PrunedAt
from greenai.trial.record import FLUSH_SECONDS, TrialRecord, finished, flatten, run_tags, spent
from greenai.trial.study_link import StudyLink
from greenai.trial.sweep_identity import APP_NODE

log = logging.getLogger("greenai.app")
# greenai's own loop's per-epoch figures, which a user's loop reports under its own names.
LOOP_METRICS = ("train_loss", "test_loss", "test_accuracy")
# Settings whose values may hold credentials: kept out of params and the config file.
URL_KEYS = (f"{APP_NODE}.tracking.uri", f"{APP_NODE}.sweep.storage")


def combined(parts: list[Measurement]) -> Measurement | None:
    """Several windows as one: an epoch's training, paused while it evaluated."""
    if not parts:
        return None

    def total(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return sum(known) if known else None

    return Measurement(
        seconds=sum(p.seconds for p in parts),
        gpu_j=total([p.gpu_j for p in parts]),
        cpu_j=total([p.cpu_j for p in parts]),
        source=combined_source([p.source for p in parts]),
        charged_seconds=total([p.charged_seconds for p in parts]),
        approximate=any(p.approximate for p in parts),
    )


@dataclass
class EpochWindows:
    """One epoch's energy windows: training, paused while the loop evaluates, whose window is
    apart, so an epoch's energy is counted once, whatever the loop nests."""

    meter: Meter
    train: list[Measurement] = field(default_factory=list)
    eval: list[Measurement] = field(default_factory=list)
    evaluating: bool = False

    def start(self) -> None:
        self.meter.begin("train")

    def begin_eval(self) -> None:
        self.train.append(self.meter.end("train"))
        self.meter.begin("eval")
        self.evaluating = True

    def end_eval(self) -> None:
        self.eval.append(self.meter.end("eval"))
        self.meter.begin("train")
        self.evaluating = False

    def finish(self) -> tuple[Measurement, Measurement]:
        if self.evaluating:
            self.end_eval()
        self.train.append(self.meter.end("train"))
        no_eval = Measurement(0.0, None, None, Source.off)
        train = combined(self.train)
        assert train is not None
        return train, combined(self.eval) or no_eval


def config_tree(cfg: DictConfig) -> dict[str, Any]:
    """The app's config as plain values, interpolations resolved where they can be, credentials
    in greenai's store URLs hidden."""
    task = without_hydra(cfg)
    try:
        tree = OmegaConf.to_container(task, resolve=True, enum_to_str=True)
    except Exception:  # an interpolation only the app can resolve: recorded as written
        tree = OmegaConf.to_container(task, resolve=False, enum_to_str=True)
    assert isinstance(tree, dict)
    node = tree.get(APP_NODE, {})
    for key in URL_KEYS:
        part, name = key.removeprefix(f"{APP_NODE}.").split(".")
        if isinstance(node.get(part, {}).get(name), str):
            node[part][name] = redact(node[part][name])
    return tree


class AppRecord(TrialRecord):
    """A user's trial's record: its app's config as params, its own metrics each epoch."""

    def describe_app(self, tree: dict[str, Any], meter: Meter) -> None:
        self.pending.params.update(flatten(tree))
        if meter.source.is_estimated:
            self.pending.tags[names.NOTE] = f"Energy is ESTIMATED, not measured: {meter.description}"
        self.run.text(redact_text(yaml.safe_dump(tree, sort_keys=False)), "config.yaml")

    def app_epoch(self, step: int, result: EpochResult, metrics: Mapping[str, float], value: float) -> bool:
        """After each epoch: its windows kept, a progress line, the energy figures and the app's
        metrics at the epoch's step, the study told `value`; whether the pruner stops the trial."""
        self.figures.epochs.append(result)
        energy = {k: v for k, v in epoch_metrics(result, self.figures.idle).items() if k not in LOOP_METRICS}
        log.info(progress(self.name, step, metrics, result.train))
        self.pending.metrics += tracking.metric_points({**energy, **metrics}, step)
        if time.monotonic() - self.pending.since >= FLUSH_SECONDS:
            self.run.log(*self.pending.take())
        return self.link.report(step, value, self.figures.metrics()["energy_j"])

    def final(self, metrics: Mapping[str, float], step: int) -> None:
        """Metrics the app reported outside any epoch (a last test), at the last epoch's step."""
        self.pending.metrics += tracking.metric_points(metrics, step)


def progress(name: str, step: int, metrics: Mapping[str, float], train: Measurement) -> str:
    shown = " ".join(f"{k} {v:.4f}" for k, v in list(metrics.items())[:4])
    joules = f"{train.total_j:.1f} J {train.source.value}" if train.total_j is not None else "energy off"
    return f"[{name}] epoch {step:>3} {shown} | {joules} {train.seconds:.2f} s"


def job_context(settings: AppSettings) -> JobContext:
    """The Hydra job the trial runs in; a plain script's run has none."""
    if HydraConfig.initialized():
        return JobContext.from_hydra(settings.sweep.trial_number, settings.sweep.study_name)
    here = os.getcwd()
    return JobContext(False, 0, None, None, here, here, None)


def run_name(job: JobContext) -> str:
    app = str(HydraConfig.get().job.name) if HydraConfig.initialized() else "app"
    return f"{app}-round{job.round}" if job.round is not None else app


def as_float(value: Any) -> float:
    """A metric as a float: plain numbers, numpy and torch scalars."""
    return float(value.item() if hasattr(value, "item") else value)


@dataclass
class AppTrial:
    settings: AppSettings
    device: torch.device
    meter: Meter
    record: AppRecord
    value: float | None = None  # the last reported value of settings.metric
    stop: bool = False  # the pruner's word after the last epoch

    @classmethod
    def open(
        cls, cfg: DictConfig, device: torch.device | str | None = None, tags: Mapping[str, object] | None = None
    ) -> AppTrial:
        """Settings, job, device, meter, idle power and study link, then the run (with `tags`
        besides greenai's): bad input fails before a run exists."""
        settings = to_settings(cfg)
        job = job_context(settings)
        store = StoreURL.tracking(settings.tracking.uri, job.launch_dir)
        if not job.multirun:  # a sweep's callback has checked it already
            check_reachable(store, f"{APP_NODE}.tracking.uri")
        where = torch.device(device) if device is not None else devices.pick_device(settings.device)
        meter = make_meter(settings.energy, where)
        idle = idle_power(meter, settings.energy.idle_seconds, job.sweep_folder)
        link = StudyLink.for_job(settings.sweep, job.launch_dir)
        sweep_stop.check(job.sweep_dir, job.job_num)
        tags = {**run_tags(job, meter, where, "", idle), **(tags or {})}
        tags.pop(names.DATASET_FILES)  # the app's data is its own
        name = run_name(job)
        figures = TrialFigures(train_images=0, idle=idle)
        record = AppRecord.open(store, settings.tracking.experiment, name, tags, link, figures, job, 0)
        assert isinstance(record, AppRecord)
        try:
            record.describe_app(config_tree(cfg), meter)
        except BaseException as exc:
            record.close(Failed(exc))
            raise
        log.info("%s on %s, energy: %s", name, where, meter.description)
        return cls(settings, where, meter, record)

    @property
    def epochs_run(self) -> int:
        return len(self.record.figures.epochs)

    def windows(self) -> EpochWindows:
        return EpochWindows(self.meter)

    def epoch_done(self, windows: EpochWindows, metrics: Mapping[str, Any]) -> bool:
        """An epoch ended: its windows and the app's metrics recorded; whether the pruner stops it."""
        train, evaluation = windows.finish()
        values = {k: as_float(v) for k, v in metrics.items()}
        if self.settings.metric in values:
            self.value = values[self.settings.metric]
        value = values.get(self.settings.metric, math.nan)
        step = self.epochs_run + 1
        result = EpochResult(step, values.get("train_loss", math.nan), math.nan, value, train, evaluation)
        self.stop = self.record.app_epoch(step, result, values, value)
        return self.stop

    def report_final(self, metrics: Mapping[str, Any]) -> None:
        values = {k: as_float(v) for k, v in metrics.items()}
        self.value = values.get(self.settings.metric, self.value)
        self.record.final(values, self.epochs_run)

    def outcome(self, error: BaseException | None) -> Outcome:
        """How the trial ended: the app's error, pruned (it raised TrialPruned, or stopped
        where the pruner said so), or finished with its metric's last value."""
        if isinstance(error, optuna.TrialPruned) or (error is None and self.stop):
            return PrunedAt(self.epochs_run)
        if error is not None:
            return Failed(error)
        if self.value is None:
            never = "was never reported: report it each epoch or at the end, or name a metric the app reports"
            return Failed(ConfigError(f"{APP_NODE}.metric", self.settings.metric, never))
        self.record.repeat_done(self.value)
        return finished(len(self.settings.objective.directions), self.record.figures)

    def close(self, error: BaseException | None) -> Outcome:
        """Close the run and the Optuna trial with the trial's outcome (StoreFull raised after
        everything that could be written is)."""
        outcome = self.outcome(error)
        self.record.close(outcome)
        if isinstance(outcome, PrunedAt):
            log.info("%s: pruned after %d epochs, %s", self.record.name, outcome.epochs_run, spent(self.record.figures))
        elif not isinstance(outcome, Failed):  # a failure is the app's error: Hydra or the sweeper says it
            log.info("%s: %s %.4f, %s", self.record.name, self.settings.metric, self.value, spent(self.record.figures))
        return outcome
