"""`python -m greenai.train` (`greenai-train`): the Hydra entry point. It composes, wires the
layers together (trial setup, records, runner), trains, and returns the metric the sweeper optimises: test accuracy, or
(accuracy, energy in J) for `objective=accuracy_energy`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from greenai.config import TRUSTED_TARGETS, register_schema
from greenai.errors import (
    BadInput,
    GreenAIError,
    StoreFull,
    command_line_errors,
    fail,
    interrupt_on_sigterm,
)
from greenai.stores import log_files
from greenai.stores.full_disk import exit_on_full
from greenai.stores.redaction import redact_logs
from greenai.sweep.fused_launcher import greenai_trial
from greenai.sweep.fused_launcher import register as register_fused_launcher
from greenai.sweep.sweeper import register as register_sweeper
from greenai.training import devices
from greenai.trial.job import JobContext, discard_run_folder
from greenai.trial.outcome import PrunedAt, job_return
from greenai.trial.runner import PreparedTrial, run_alone, run_fused
from greenai.trial.setup import open_record, prepare

log = logging.getLogger("greenai.train")
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
register_schema()
register_sweeper()
register_fused_launcher()
devices.register_resolvers()


def train(cfg: DictConfig) -> float | tuple[float, float] | PrunedAt:
    setup = prepare(cfg)
    trial = PreparedTrial(setup, open_record(setup))
    fused = setup.fused and setup.config.repeats > 1
    return job_return(run_fused([trial])[0] if fused else run_alone(trial))


# Targets a greenai config may instantiate (greenai.config.TRUSTED_TARGETS); a model's or
# dataset's `_target_` may also be one the config trusts (`trusted_targets`), checked by
# training.models before it is imported.
@hydra.main(config_path=CONF_DIR, config_name="config", execution_whitelist=TRUSTED_TARGETS)
@greenai_trial  # hydra/launcher=fused may prepare its jobs and train them fused
def hydra_main(cfg: DictConfig) -> float | tuple[float, float] | PrunedAt:
    interrupt_on_sigterm()
    redact_logs()
    log_files.guard_log_files()
    try:
        returned = train(cfg)
        log_full = log_files.full()  # the trial is recorded, but its log met a full disk
        if log_full is not None:
            if JobContext.is_multirun():
                raise log_full  # the sweeper stops: the next job could not write its files there
            exit_on_full(log_full, "run finished")
        return returned
    except GreenAIError as exc:
        if JobContext.is_multirun():
            raise  # the sweeper records the trial as failed, with this message
        if isinstance(exc, StoreFull):
            exit_on_full(exc, "run")
        if isinstance(exc, BadInput):
            discard_run_folder()
        fail(str(exc))


def main() -> None:
    """`python -m greenai.train` / `greenai-train`. A sweep stopped by a full store arrives
    here as StoreFull (a single run says so itself, in hydra_main)."""
    with command_line_errors():
        try:
            hydra_main()
        except StoreFull as exc:
            exit_on_full(exc, "sweep")


if __name__ == "__main__":
    main()
