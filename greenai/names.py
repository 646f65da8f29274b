"""The names greenai writes into other tools' stores: MLflow tags and Optuna trial attributes.

One module owns them, so a reader (the report, the parent run, a resumed sweep) and a writer
(the trial) cannot drift apart. Values are plain strings; nothing here imports a library.
"""

from __future__ import annotations

# ---------------------------------------------------------------- MLflow tags (MLflow's own)
PARENT = "mlflow.parentRunId"
NOTE = "mlflow.note.content"  # the run's description in the MLflow UI

# ---------------------------------------------------------------- MLflow tags (greenai's)
RUN_KIND = "greenai.run_kind"  # "trial" or "sweep"
TRIAL_STATE = "greenai.trial_state"  # running, finished, failed, pruned, killed
FAILURE_REASON = "greenai.failure_reason"
OWNER = "greenai.owner"  # host:pid of the process that writes the run
ROUND = "greenai.round"
SEARCHER = "greenai.searcher"
STUDY = "greenai.study_name"
TRIAL_NUMBER = "optuna.trial_number"
COMMAND = "greenai.command"
SEARCH_SPACE = "greenai.search_space"
STOP_REASON = "greenai.stop_reason"
PARETO = "greenai.pareto"
PARETO_ROUNDS = "greenai.pareto_rounds"
RESUMED = "greenai.resumed"
DATASET_FILES = "dataset_files"  # where the trial read its data from
DATA_PLACEMENT = "data_placement"  # on the device, or streamed (greenai.training.data)
SPOOL_ID = "greenai.spool_id"  # a write kept while the tracking server was away (greenai.stores.spool)
ENERGY_SOURCE = "energy_source"  # measured, estimated, partial, attributed, fused, off
ENERGY_DEVICE = "energy_device"
ENERGY_COMPONENTS = "energy_components"  # what energy_j covers: gpu, gpu+cpu+dram, cpu-time estimate
APPROXIMATE_WINDOWS = "energy_approximate_windows"  # windows shorter than 10 counter periods
REDERIVED_WINDOWS = "energy_rederived_windows"  # RAPL readings corrected for a miscounted wrap-around
NOT_MEASURED = "energy_not_measured"  # components whose counters could not be read, and why
IDLE_SOURCE = "idle_source"
# The warm-up on the trial's shapes before its first window (greenai.training.warmup): done,
# already done in this process, off, or failed (and why).
WARMUP = "greenai.warmup"
LEDGER_SOURCE = "energy_ledger_source"  # what the sweep's ledger total was read from
SWEEP_DIR = "hydra.sweep_dir"
OUTPUT_DIR = "hydra.output_dir"
JOB_NUM = "hydra.job_num"

# ---------------------------------------------------------------- Optuna trial user attributes
ENERGY_ATTR = "energy_j"
MLFLOW_RUN_ATTR = "mlflow_run_id"
OWNER_ATTR = "greenai_owner"  # host:pid of the process that asked the trial
JOB_OWNER_ATTR = "greenai_job"  # host:pid of the process that trains it
FAILURE_ATTR = "failure_reason"
INTERRUPTED_ATTR = "interrupted"  # set on trials stopped by a signal: their point is run again
RETRY_ATTR = "retry_of"  # on a trial queued again for an interrupted one: that trial's number
# Final figures a job copies onto its trial, as one attribute (one write): the sweeper's stop
# rules read its accuracy and energy, a reader of the study (optuna-dashboard) the rest.
FIGURES_ATTR = "figures"
RECORDED_METRICS = (
    "accuracy",
    "energy_j",
    "net_energy_j",
    "train_energy_j",
    "train_seconds",
    "busy_seconds",
    "epochs_run",
)
