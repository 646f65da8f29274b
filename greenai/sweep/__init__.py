"""Sweeps: greenai's Optuna sweeper (search space, study, stop rules), the fused launcher, packed
trials' energy attribution, and the sweep's MLflow parent run with its totals."""
