"""The warm-up (energy.warmup_steps) as a user runs it: a sweep with it off and on, read back
from MLflow. Its rules in this process are tests/unit/test_warmup.py."""

from __future__ import annotations

import pytest
from store_readers import mlflow_runs, trial_runs

pytestmark = pytest.mark.slow


def test_a_trial_warmed_up_first_gives_what_it_gives_without(greenai, tiny):
    """The warm-up on a trial's shapes (energy.warmup_steps) trains a throwaway model with the
    global RNG streams given back: the trial's results are bit for bit those it has without."""
    args = [a for a in tiny if not a.startswith("epochs=")]
    greenai("-m", *args, "epochs=2", "deterministic=true", "energy=estimate", "energy.warmup_steps=0,2")
    runs = {r.data.params["energy.warmup_steps"]: r for r in trial_runs(mlflow_runs(greenai.cwd))}
    cold, warm = runs["0"], runs["2"]
    assert cold.data.tags["greenai.warmup"] == "off" and warm.data.tags["greenai.warmup"] == "done"
    assert warm.data.metrics["warmup_energy_j"] > 0 and "warmup_energy_j" not in cold.data.metrics
    for key in ("accuracy", "train_loss", "test_loss", "test_accuracy"):
        assert cold.data.metrics[key] == warm.data.metrics[key], key
