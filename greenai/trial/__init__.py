"""One trial: its config checked, what it runs on and measures with, its records (an MLflow run,
an Optuna trial), and its training, alone or fused with others."""
