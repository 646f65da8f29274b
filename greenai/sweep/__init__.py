"""Sweeps: greenai's Optuna sweeper, the job's link to its study, and the MLflow sweep run."""
