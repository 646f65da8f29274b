"""One trial made ready to train: its config checked, device, energy meter, idle power, data
and link to its Optuna trial settled, and its MLflow run opened. Bad input fails here, before a
run exists. Used by `python -m greenai.train` (one job) and by the fused launcher (a batch).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from greenai.config import TrainConfig
from greenai.energy.idle import IdlePower, cuda_context, idle_power
from greenai.energy.meters import Meter, Source, make_meter
from greenai.stores import sweep_stop
from greenai.stores.reachability import check_reachable
from greenai.stores.url import StoreURL
from greenai.training import data, devices, models
from greenai.trial import packed
from greenai.trial.figures import TrialFigures
from greenai.trial.job import JobContext
from greenai.trial.life import OPENING, STARTUP, Piece, piece
from greenai.trial.outcome import Failed
from greenai.trial.preflight import check_job
from greenai.trial.record import TrialRecord, run_tags
from greenai.trial.study_link import StudyLink

log = logging.getLogger("greenai.train")


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
    fused: bool  # the trial's repeats train as one fused group
    startup: Piece | None = None  # its preparation's window on the sweep's ledger
    opening: Piece | None = None  # its run's opening's window

    @property
    def name(self) -> str:
        return self.job.run_name(self.spec.name, self.config.seed)


def fuses(config: TrainConfig, device: torch.device, packed: bool) -> bool:
    """`fuse=null` (auto): fused on a GPU, where one member leaves the device mostly idle; not
    on a CPU, where fusion roughly breaks even. Packed trials are attributed window by window
    and never fused."""
    if packed:  # fuse=true with packing was refused before anything ran (preflight.check_job)
        return False
    return device.type == "cuda" if config.fuse is None else bool(config.fuse)


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
    # Before the data is loaded (and before this process's CUDA context, which it then creates to
    # measure the context's draw): in a sweep the callback measured it already on this host.
    idle = idle_power(meter, config.energy.idle_seconds, job.sweep_folder, cuda_context(device))
    timeline = packed.timeline_meter(cfg, job.sweep_folder, config.sweep.trial_number, device)
    # The trial's start-up on the sweep's ledger (a packed trial's is attributed by the sweeper).
    startup = Piece.begin(meter, STARTUP) if timeline is None and meter.source is not Source.off else None
    try:
        dataset = data.load(config.dataset, device)
        if timeline is not None:
            timeline.note(train_images=len(dataset.y_train), idle=idle.saved() if idle else None)
            meter = timeline
        fused = fuses(config, device, packed=timeline is not None)
        link = StudyLink.for_job(config.sweep, job.launch_dir, defer_tell=timeline is not None)
    except BaseException:
        if startup is not None:
            startup.cancel()
        raise
    if startup is not None:
        startup.end()
    setup = TrialSetup(config, spec, job, store, device, dataset, meter, idle, link, fused, startup)
    log.info(
        "%s on %s, energy: %s%s",
        setup.name,
        device,
        meter.description,
        ", repeats fused" if fused and config.repeats > 1 else "",
    )
    return setup


def open_record(setup: TrialSetup) -> TrialRecord:
    """The trial's MLflow run (described: params, architecture, config file) and its figures;
    none, and SweepStopped, if a job of its sweep met a full store (greenai.sweep.full_stop).
    Opening it is measured for the sweep's ledger, apart from preparing the trial: the fused
    launcher prepares a whole batch before it opens their runs."""
    sweep_stop.check(setup.job.sweep_dir, setup.job.job_num)
    if setup.startup is None:  # no ledger entries: energy off, or a packed trial
        return _described_record(setup)
    with piece(setup.meter, OPENING) as setup.opening:
        return _described_record(setup)


def _described_record(setup: TrialSetup) -> TrialRecord:
    config = setup.config
    figures = TrialFigures(train_images=len(setup.dataset.y_train), idle=setup.idle)
    tags = run_tags(setup.job, setup.meter, setup.device, setup.dataset.source, setup.idle)
    record = TrialRecord.open(
        setup.store,
        config.tracking.experiment,
        setup.name,
        tags,
        setup.link,
        figures,
        setup.job,
        config.epochs * config.repeats,
    )
    try:
        record.describe(config, setup.spec, setup.meter)
    except BaseException as exc:
        record.close(Failed(exc))
        raise
    return record
