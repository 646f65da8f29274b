"""Shared by the benchmarks: run greenai commands in a scratch folder, read the stores, and the
Fashion-MNIST config they train on."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def fashion_mnist(cache_dir: str | Path, **fields: object):  # -> greenai.config.DatasetConfig
    """Fashion-MNIST exactly as `dataset=fashion_mnist` configures it (conf/dataset/fashion_mnist.yaml,
    normalisation included), with `cache_dir` and any other field (root, train_size, ...) set."""
    return shipped_dataset("fashion_mnist", cache_dir, **fields)


def shipped_dataset(name: str, cache_dir: str | Path, **fields: object):  # -> greenai.config.DatasetConfig
    """A dataset exactly as `dataset=NAME` configures it (conf/dataset/NAME.yaml), with `cache_dir`
    and any other field set."""
    from omegaconf import OmegaConf

    from greenai.config import DatasetConfig

    shipped = OmegaConf.load(REPO / "conf" / "dataset" / f"{name}.yaml")
    merged = OmegaConf.merge(OmegaConf.structured(DatasetConfig), shipped, {"cache_dir": str(cache_dir), **fields})
    return OmegaConf.to_object(merged)


def run(work: Path, *args: str, module: str = "train") -> float:
    """Run `python -m greenai.<module> ARGS` in `work`; return its wall time in seconds."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", f"greenai.{module}", *args],
        cwd=work,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    if proc.returncode != 0:
        sys.exit(f"benchmark command failed ({proc.returncode}): {' '.join(args)}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def study_trials(work: Path) -> list:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{work / 'optuna.db'}"
    (summary,) = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary.study_name, storage=storage).get_trials(deepcopy=False)


def trial_runs(work: Path) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    exp = client.get_experiment_by_name("greenai")
    runs = client.search_runs([exp.experiment_id], max_results=5000)
    return [r for r in runs if r.data.tags.get("greenai.run_kind") == "trial"]


def energy_source(work: Path) -> str:
    return "+".join(sorted({r.data.tags.get("energy_source", "?") for r in trial_runs(work)}))
