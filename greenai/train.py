"""`python -m greenai.train` (`greenai-train`): the Hydra entry point. It composes, wires the
rooms together, trains, and returns the metric the sweeper optimises: test accuracy, or
(accuracy, energy in J) for `objective=accuracy_energy`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from greenai import data, devices, models
from greenai.config import TrainConfig, register_schema
from greenai.energy import Meter, make_meter
from greenai.errors import BadInput, GreenAIError, command_line_errors, fail, interrupt_on_sigterm
from greenai.idle import IdlePower, idle_power
from greenai.job import JobContext, discard_run_folder
from greenai.preflight import check_job
from greenai.reachability import check_reachable
from greenai.redaction import redact_logs
from greenai.stores import StoreURL
from greenai.sweep import packing
from greenai.sweep.study_link import Pruned, PrunedAt, StudyLink
from greenai.sweep.sweeper import register as register_sweeper
from greenai.trial import TrialFigures, run_repeats
from greenai.trial_record import TrialRecord, objective, run_tags

log = logging.getLogger("greenai.train")
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
register_schema()
register_sweeper()
devices.register_resolvers()


@dataclass
class TrialSetup:
    """Everything a trial needs, settled before its MLflow run is opened."""

    config: TrainConfig
    spec: models.ArchitectureSpec
    job: JobContext
    store: StoreURL
    device: torch.device
    dataset: data.DeviceData
    meter: Meter
    idle: IdlePower | None
    link: StudyLink


def prepare(cfg: DictConfig) -> TrialSetup:
    """Checks, device, energy meter, idle power, data: bad input fails here, before a run exists."""
    config, spec = check_job(cfg)
    job = JobContext.from_hydra(config.sweep.trial_number, config.sweep.study_name)
    store = StoreURL.parse(config.tracking.uri, job.launch_dir)
    if not job.multirun:  # a sweep's callback has checked it already
        check_reachable(store, "tracking.uri")
    device = devices.pick_device(config.device)
    devices.set_deterministic(config.deterministic)
    meter: Meter = make_meter(config.energy, device)
    # Before the data is loaded: in a sweep the callback measured it already on this host.
    idle = idle_power(meter, config.energy.idle_seconds, job.sweep_folder)
    dataset = data.load(config.dataset, device)
    timeline = packing.timeline_meter(cfg, job.sweep_folder, config.sweep.trial_number, device)
    if timeline is not None:
        timeline.note(train_images=len(dataset.y_train), idle_w=idle.watts if idle else None)
        meter = timeline
    link = StudyLink.for_job(config.sweep, job.launch_dir, defer_tell=timeline is not None)
    log.info("%s on %s, energy: %s", job.run_name(spec.name, config.seed), device, meter.description)
    return TrialSetup(config, spec, job, store, device, dataset, meter, idle, link)


def train(cfg: DictConfig) -> float | tuple[float, float] | PrunedAt:
    setup = prepare(cfg)
    config = setup.config
    figures = TrialFigures(train_images=len(setup.dataset.y_train), idle=setup.idle)
    tags = run_tags(setup.job, setup.meter, setup.device, setup.dataset.source, setup.idle)
    name = setup.job.run_name(setup.spec.name, config.seed)
    record = TrialRecord.open(setup.store, config.tracking.experiment, name, tags, setup.link, figures, setup.job,
                              config.epochs * config.repeats)
    try:
        record.describe(cfg, setup.spec, setup.meter)
        run_repeats(config, setup.spec, setup.dataset, setup.meter, figures, record.epoch, record.optimizer)
    except BaseException as exc:
        # The energy spent is logged and the study told before the run closes as pruned,
        # failed or killed (a signal arrives here as KeyboardInterrupt).
        record.close(None, exc)
        if not isinstance(exc, Pruned):
            raise
        log.info("%s: %s, after %s", name, exc, _joules(figures))
        # Returned, not raised: a pruned trial is no error (greenai's sweeper tells it PRUNED).
        return PrunedAt(len(figures.epochs))
    values = objective(len(config.objective.directions), figures)
    record.close(values, None)
    log.info("%s: accuracy %.4f, energy %s", name, figures.accuracy, _joules(figures))
    returned = [math.nan if v is None else float(v) for v in values]
    return returned[0] if len(returned) == 1 else (returned[0], returned[1])


def _joules(figures: TrialFigures) -> str:
    spent = figures.metrics()["energy_j"]
    if spent is None:
        return "energy not measured" if figures.source.value == "off" else "energy attributed after the batch"
    return f"{spent:.1f} J ({figures.source.value})"


# Targets a greenai config may instantiate: our own classes, Hydra's plugins (sweepers,
# launchers), Optuna's samplers and pruners, and the logging handlers of Hydra's job logging.
TRUSTED_TARGETS = ("greenai.*", "hydra_plugins.*", "optuna.samplers.*", "optuna.pruners.*", "logging.*")


@hydra.main(config_path=CONF_DIR, config_name="config", execution_whitelist=TRUSTED_TARGETS)
def hydra_main(cfg: DictConfig) -> float | tuple[float, float] | PrunedAt:
    interrupt_on_sigterm()
    redact_logs()
    try:
        return train(cfg)
    except GreenAIError as exc:
        if JobContext.is_multirun():
            raise  # the sweeper records the trial as failed, with this message
        if isinstance(exc, BadInput):
            discard_run_folder()
        fail(str(exc))


def main() -> None:
    """`python -m greenai.train` / `greenai-train`."""
    with command_line_errors():
        hydra_main()


if __name__ == "__main__":
    main()
