"""`python -m greenai.train`: the Hydra entry point. It only wires the rooms together.

Returns the metric the sweeper optimises: test accuracy, or (accuracy, energy in J) for
`objective=accuracy_energy`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from greenai import data, energy, models, tracking
from greenai.checks import preflight
from greenai.config import Objective, TrainConfig, register_configs
from greenai.errors import BadInput, ConfigError, GreenAIError, command_line_errors, fail, interrupt_on_sigterm
from greenai.job import JobContext, discard_run_folder
from greenai.loop import EpochResult, format_progress
from greenai.reachability import check_reachable
from greenai.redaction import redact_logs, redact_text
from greenai.sweep.owner import owner_id
from greenai.sweep.study_link import Pruned, PrunedAt, StudyLink
from greenai.trial import TrialFigures, epoch_metrics, run_repeats

log = logging.getLogger("greenai.train")
register_configs()
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError("device", name, "must be auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", name, "no CUDA GPU is visible here; use device=auto or device=cpu")
    return device


def run_tags(job: JobContext, meter: energy.Meter, device: torch.device, where: str, idle: energy.IdlePower | None) -> dict[str, object]:
    return ({"idle_source": idle.source.value} if idle else {}) | {
        tracking.RUN_KIND: "trial",
        tracking.TRIAL_STATE: "running",
        "greenai.owner": owner_id(),
        "energy_source": meter.source.value,
        "energy_device": meter.description,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "dataset_files": where,
        **job.tags(),
        **job.versions(),
    }


@dataclass
class Trial:
    """Everything a trial needs, settled before its MLflow run is opened."""

    config: TrainConfig
    spec: models.ArchitectureSpec
    job: JobContext
    device: torch.device
    dataset: data.DeviceData
    meter: energy.Meter
    idle: energy.IdlePower | None
    link: StudyLink
    name: str


def prepare(cfg: DictConfig) -> Trial:
    """Checks, data, energy meter and idle power: any bad input fails here, before a run exists."""
    config, spec = preflight(cfg)
    job = JobContext.from_hydra(config.sweep.trial_number, config.sweep.study_name)
    if not job.multirun:  # a sweep's callback has checked it already
        check_reachable(tracking.resolve_uri(config.tracking.uri, job.launch_dir), "tracking.uri")
    device = pick_device(config.device)
    dataset = data.load(config.dataset, device)
    meter = energy.make_meter(config.energy, device)
    shared = Path(job.sweep_dir) / ".greenai" if job.sweep_dir else None
    idle = energy.idle_power(meter, config.energy.idle_seconds, shared)
    name = job.run_name(spec.name, config.seed)
    log.info("%s on %s, energy: %s", name, device, meter.description)
    return Trial(config, spec, job, device, dataset, meter, idle, StudyLink.for_job(config.sweep, job), name)


def describe_run(run: tracking.RunLogger, trial: Trial, cfg: DictConfig) -> None:
    """What the run is: config, architecture, composed config file, an estimate warning."""
    summary = models.summarize(models.build(trial.spec), trial.spec.input_shape).as_dict()
    run.params({**trial.job.flat_params(cfg), **{f"arch.{k}": v for k, v in summary.items()}})
    run.metrics({f"arch_{k}": v for k, v in summary.items() if k in ("params", "macs_per_sample")})
    run.text(redact_text(OmegaConf.to_yaml(trial.job.without_hydra(cfg))), "config.yaml")
    if trial.meter.source is energy.Source.estimated:
        run.tags({tracking.NOTE: f"Energy is ESTIMATED, not measured: {trial.meter.description}"})


def objective(config: TrainConfig, figures: TrialFigures) -> list[float]:
    """The values the sweeper optimises, in the order of `objective.directions`."""
    if config.objective.name is Objective.accuracy_energy:
        return [figures.accuracy, float(figures.metrics()["energy_j"] or 0.0)]
    return [figures.accuracy]


def record(run: tracking.RunLogger, trial: Trial, figures: TrialFigures) -> None:
    """The trial's figures so far, on the run and the Optuna trial: kept whatever stops it."""
    final = figures.metrics()
    run.metrics(final)
    run.tags({"energy_source": figures.source.value})
    trial.link.record(final)


def train(cfg: DictConfig) -> float | tuple[float, float] | PrunedAt:
    trial = prepare(cfg)
    config = trial.config
    figures = TrialFigures(train_images=len(trial.dataset.y_train), idle=trial.idle)
    epochs = config.epochs * config.repeats
    uri = tracking.resolve_uri(config.tracking.uri, trial.job.launch_dir)
    tags = run_tags(trial.job, trial.meter, trial.device, trial.dataset.source, trial.idle)
    try:
        with tracking.open_run(uri, config.tracking.experiment, trial.name, tags) as run, trial.link.attached(run.run_id):
            describe_run(run, trial, cfg)

            def on_epoch(step: int, result: EpochResult) -> None:
                log.info(format_progress(trial.name, result, epochs))
                run.metrics(epoch_metrics(result, trial.idle), step=step)
                trial.link.report(step, result.test_accuracy, figures.metrics()["energy_j"])

            try:
                run_repeats(config, trial.spec, trial.dataset, trial.meter, figures, on_epoch, run.params)
            except BaseException as exc:
                # The energy spent is logged and the study told before the run closes as
                # pruned, failed or killed (a signal arrives here as KeyboardInterrupt).
                record(run, trial, figures)
                trial.link.finish(None, exc)
                raise
            record(run, trial, figures)
            trial.link.finish(objective(config, figures))
    except Pruned as pruned:
        log.info("%s: %s, after %s", trial.name, pruned, _joules(figures))
        # Returned, not raised: a pruned trial is no error (greenai's sweeper tells it PRUNED).
        return PrunedAt(len(figures.epochs))
    log.info("%s: accuracy %.4f, energy %s", trial.name, figures.accuracy, _joules(figures))
    values = objective(config, figures)
    return values[0] if len(values) == 1 else (values[0], values[1])


def _joules(figures: TrialFigures) -> str:
    spent = figures.metrics()["energy_j"]
    return "energy not measured" if spent is None else f"{spent:.1f} J ({figures.source.value})"


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
