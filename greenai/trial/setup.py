"""One trial made ready to train: its config checked, device, energy meter, idle power, data
and link to its Optuna trial settled, and its MLflow run opened. Bad input fails here, before a
run exists. Used by `python -m greenai.train` (one job) and by the fused launcher (a batch).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from greenai import names
from greenai.config import Augment, OptimizerName, Precision, SchedulerName, TrainConfig
from greenai.energy.idle import IdlePower, cuda_context, idle_power
from greenai.energy.meters import Meter, Source, make_meter
from greenai.stores import sweep_stop
from greenai.stores.reachability import check_reachable
from greenai.stores.url import StoreURL
from greenai.training import data, devices, fusion, inputs, models
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
    dataset: inputs.TrainingData
    meter: Meter
    idle: IdlePower | None
    link: StudyLink
    unfused: str | None  # why its repeats do not train as one fused group; None: they do
    startup: Piece | None = None  # its preparation's window on the sweep's ledger
    opening: Piece | None = None  # its run's opening's window
    warmup: Piece | None = None  # its warm-up's window (trial.runner.warm), where it had one

    @property
    def fused(self) -> bool:
        return self.unfused is None

    @property
    def name(self) -> str:
        return self.job.run_name(self.spec.name, self.config.seed)


def unfused_reason(
    config: TrainConfig,
    device: torch.device,
    packed: bool,
    dataset: inputs.TrainingData | None = None,
    spec: models.ArchitectureSpec | None = None,
) -> str | None:
    """Why the trial's repeats do not train as one fused group (None: they do), the one place
    greenai decides it. `fuse=null` (auto): fused on a GPU, where one member leaves the device
    mostly idle; not on a CPU, where fusion roughly breaks even. Packed trials are attributed
    window by window and never fused. A trial fusion cannot take runs unfused, and the log says
    once why."""
    if packed:  # fuse=true with packing was refused before anything ran (preflight.check_job)
        return "packed trials are attributed one by one"
    if config.fuse is False:
        return "fuse=false"
    if config.fuse is None and device.type != "cuda":
        return f"fusion off on {device.type}: fuse=true to force"
    obstacle = fusion_obstacle(config, dataset, spec)
    if obstacle is not None:
        _say_once(f"fuse: running unfused: {obstacle}")
    return obstacle


def fusion_obstacle(
    config: TrainConfig, dataset: inputs.TrainingData | None, spec: models.ArchitectureSpec | None = None
) -> str | None:
    """Why a trial cannot fuse (None: it can). Fusion groups members of a model built of the
    layers it can group, that see the same device tensors in the same order, with Adam in
    float32 at a constant learning rate."""
    if spec is not None and (why := _model_obstacle(spec)) is not None:
        return f"the model ({spec.name}) {why}"
    if config.optimizer.name is not OptimizerName.adam:
        return f"optimizer={config.optimizer.name.value} (fusion trains Adam only)"
    if config.precision.name is not Precision.fp32:
        return f"precision={config.precision.name.value} (fusion trains in float32 only)"
    if config.scheduler.name is not SchedulerName.none:
        return f"scheduler={config.scheduler.name.value} (fusion trains at a constant lr only)"
    if dataset is not None and not isinstance(dataset, data.DeviceData):
        return "the data is streamed (fusion needs it on the device)"
    if config.dataset.augment is not Augment.none:
        return f"dataset.augment={config.dataset.augment.value} (fused members see their images unaugmented)"
    return None


@functools.cache
def _model_obstacle(spec: models.ArchitectureSpec) -> str | None:
    """Once per architecture and process: every trial of a fused batch would build the same model."""
    return fusion.why_not_fusable(models.build(spec))


_SAID: set[str] = set()


def _say_once(line: str) -> None:
    """A reason logged once per process, not once per trial of a batch."""
    if line not in _SAID:
        _SAID.add(line)
        log.info(line)


def prepare(cfg: DictConfig) -> TrialSetup:
    """Checks, device, energy meter, idle power, data: bad input fails here, before a run exists."""
    config, spec = check_job(cfg)
    job = JobContext.from_hydra(config.sweep.trial_number, config.sweep.study_name)
    store = StoreURL.tracking(config.tracking.uri, job.launch_dir)
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
        dataset = inputs.load(config.dataset, device, tuple(config.trusted_targets))
        # What was read from the data (shape, classes, mean, std) is what the run records.
        config.dataset = inputs.resolved(config.dataset, dataset, spec.input_shape, spec.classes)
        if timeline is not None:
            timeline.note(train_images=dataset.train_count, idle=idle.saved() if idle else None)
            meter = timeline
        unfused = unfused_reason(config, device, packed=timeline is not None, dataset=dataset, spec=spec)
        link = StudyLink.for_job(config.sweep, job.launch_dir, defer_tell=timeline is not None)
    except BaseException:
        if startup is not None:
            startup.cancel()
        raise
    if startup is not None:
        startup.end()
    setup = TrialSetup(config, spec, job, store, device, dataset, meter, idle, link, unfused, startup)
    log.info(
        "%s on %s, energy: %s%s",
        setup.name,
        device,
        meter.description,
        ", repeats fused" if setup.fused and config.repeats > 1 else "",
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
    figures = TrialFigures(train_images=setup.dataset.train_count, idle=setup.idle)
    tags = run_tags(setup.job, setup.meter, setup.device, setup.dataset.source, setup.idle)
    tags[names.DATA_PLACEMENT] = setup.dataset.placement
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
    if setup.dataset.placement == "streamed":
        record.progress_note = ", data streamed"
    try:
        record.describe(config, setup.spec, setup.meter)
    except BaseException as exc:
        record.close(Failed(exc))
        raise
    return record
