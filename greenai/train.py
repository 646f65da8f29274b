"""`python -m greenai.train`: the Hydra entry point. It only wires the rooms together.

Returns the metric the sweeper optimises: test accuracy, or (accuracy, energy in J) for
`objective=accuracy_energy`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from greenai import data, energy, models, tracking
from greenai.checks import preflight
from greenai.config import Objective, register_configs
from greenai.errors import ConfigError, GreenAIError, fail
from greenai.job import JobContext
from greenai.loop import EpochResult, format_progress
from greenai.sweep.owner import owner_id
from greenai.sweep.study_link import StudyLink
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


def run_tags(job: JobContext, meter: energy.Meter, device: torch.device, where: str) -> dict[str, object]:
    return {
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


def train(cfg: DictConfig) -> float | tuple[float, float]:
    config, spec = preflight(cfg)
    job = JobContext.from_hydra(config.sweep.trial_number, config.sweep.study_name)
    device = pick_device(config.device)
    dataset = data.load(config.dataset, device)
    meter = energy.make_meter(config.energy, device)
    link = StudyLink.for_job(config.sweep, job)
    name = job.run_name(spec.name, config.seed)
    uri = tracking.resolve_uri(config.tracking.uri, job.launch_dir)
    log.info("%s on %s, energy: %s", name, device, meter.description)

    tags = run_tags(job, meter, device, dataset.source)
    with tracking.open_run(uri, config.tracking.experiment, name, tags) as run, link.attached(run.run_id):
        summary = models.summarize(models.build(spec), spec.input_shape).as_dict()
        run.params({**job.flat_params(cfg), **{f"arch.{k}": v for k, v in summary.items()}})
        run.metrics({f"arch_{k}": v for k, v in summary.items() if k in ("params", "macs_per_sample")})
        run.text(tracking.redact_text(OmegaConf.to_yaml(job.without_hydra(cfg))), "config.yaml")
        if meter.source is energy.Source.estimated:
            run.tags({tracking.NOTE: f"Energy is ESTIMATED, not measured: {meter.description}"})
        figures = TrialFigures(train_images=len(dataset.y_train))

        def on_epoch(step: int, result: EpochResult) -> None:
            log.info(format_progress(name, result, config.epochs * config.repeats if config.repeats > 1 else config.epochs))
            run.metrics(epoch_metrics(result), step=step)
            link.report(step, result.test_accuracy)

        try:
            run_repeats(config, spec, dataset, meter, figures, on_epoch, run.params)
        finally:
            # Whatever stopped the trial, the energy it spent is on the run.
            final = figures.metrics()
            run.metrics(final)
            run.tags({"energy_source": figures.source.value})
            link.record(final)
    log.info("%s: accuracy %.4f, energy %s", name, figures.accuracy, _joules(final, figures.source))
    if config.objective.name is Objective.accuracy_energy:
        return figures.accuracy, float(final["energy_j"] or 0.0)
    return figures.accuracy


def _joules(final: dict[str, float | None], source: energy.Source) -> str:
    if final["energy_j"] is None:
        return "not measured"
    return f"{final['energy_j']:.1f} J ({source.value})"


# Targets a greenai config may instantiate: our own classes, Hydra's plugins (sweepers,
# launchers), Optuna's samplers and pruners, and the logging handlers of Hydra's job logging.
TRUSTED_TARGETS = ("greenai.*", "hydra_plugins.*", "optuna.samplers.*", "optuna.pruners.*", "logging.*")


@hydra.main(config_path=CONF_DIR, config_name="config", execution_whitelist=TRUSTED_TARGETS)
def main(cfg: DictConfig) -> float | tuple[float, float]:
    try:
        return train(cfg)
    except GreenAIError as exc:
        if JobContext.is_multirun():
            raise  # the sweeper records the trial as failed, with this message
        fail(str(exc))


if __name__ == "__main__":
    main()
