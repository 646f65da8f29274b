"""Typed configuration: the schema behind `conf/`, and the checks that refuse bad input.

The dataclasses are registered in Hydra's ConfigStore as `greenai_schema`; `conf/config.yaml`
lists it first in its defaults, so every YAML value is merged into a typed node and a wrong
type or an unknown key fails at composition with an error that names the key.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from greenai.errors import ConfigError


class ModelName(str, Enum):
    simplecnn = "simplecnn"
    densepoly = "densepoly"
    denselinear = "denselinear"


class DatasetName(str, Enum):
    fashion_mnist = "fashion_mnist"
    cifar10 = "cifar10"


class EnergyBackend(str, Enum):
    auto = "auto"
    zeus = "zeus"
    estimate = "estimate"
    off = "off"


class Objective(str, Enum):
    accuracy = "accuracy"
    accuracy_energy = "accuracy_energy"


@dataclass
class ModelConfig:
    name: ModelName = MISSING


@dataclass
class DatasetConfig:
    name: DatasetName = MISSING
    # Shape of one image (C, H, W): known before loading, so layer counts are checked first.
    channels: int = MISSING
    height: int = MISSING
    width: int = MISSING
    # Per-channel normalisation constants of the training split.
    mean: list[float] = MISSING
    std: list[float] = MISSING
    # Where the files are, if the user has them; None = system locations, then download.
    root: str | None = None
    # Where downloads and decompressed system copies go.
    cache_dir: str = "~/.cache/greenai/data"
    download: bool = True
    # Seeded, class-balanced subsets for quick runs; None = the whole split.
    train_size: int | None = None
    test_size: int | None = None
    # Seed of the subset draw, apart from the training seed so repeats see the same images.
    subset_seed: int = 0


@dataclass
class EnergyConfig:
    backend: EnergyBackend = EnergyBackend.auto
    # Used by the estimate: joules per CPU-second (a busy server core draws roughly this).
    watts_per_cpu_core: float = 10.0
    # Seconds of idle measurement, once per sweep and host (0 = not measured). Counters only:
    # the estimate's idle power is zero by construction.
    idle_seconds: float = 3.0


@dataclass
class TrackingConfig:
    # MLflow's own environment variables when set (as for mlflow.start_run), else a sqlite file
    # in the folder the command was started in (relative paths are taken from there).
    uri: str = "${oc.env:MLFLOW_TRACKING_URI,sqlite:///mlflow.db}"
    experiment: str = "${oc.env:MLFLOW_EXPERIMENT_NAME,greenai}"


@dataclass
class SweepConfig:
    """Settings of an Optuna-driven sweep; also how a job learns which trial it is."""

    storage: str = "sqlite:///optuna.db"
    study_name: str | None = None
    # Set by greenai's sweeper for each job; None outside Optuna sweeps.
    trial_number: int | None = None
    # Once finished and running trials have spent this much, no new trial starts.
    energy_budget_kj: float | None = None
    # Once a finished trial reaches this accuracy, no new trial starts.
    target_accuracy: float | None = None
    # An Optuna pruner (`_target_: optuna.pruners.MedianPruner`, ...): conf/pruner/.
    pruner: Any = None
    # Trials run at once on one GPU (with hydra/launcher=packed); their GPU energy is attributed.
    trials_per_gpu: int = 1
    # Database storages: a running trial whose job has not recorded a heartbeat (once per epoch)
    # for this long is failed and its point queued again. Longer than your longest epoch.
    heartbeat_grace_seconds: int = 600


@dataclass
class ObjectiveConfig:
    name: Objective = Objective.accuracy
    # Optuna study directions, in the order train() returns its values.
    directions: list[str] = field(default_factory=lambda: ["maximize"])


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    energy: EnergyConfig = field(default_factory=EnergyConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    conv_layers: int = 2
    linear_layers: int = 3
    relu: bool = True
    epochs: int = 25
    batch_size: int = 512
    seed: int = 1234
    # Each trial trains `repeats` times (seeds seed, seed+1, …): accuracy averaged, energy summed.
    repeats: int = 1
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    device: str = "auto"
    # torch's and cuDNN's deterministic algorithms, cuBLAS's fixed workspace, no autotuning:
    # bit-identical weights for a seed on one GPU, slower.
    deterministic: bool = False
    # Train a trial's repeats (and, with hydra/launcher=fused, a batch's trials) as one grouped
    # model: true, false, or null = on a GPU only (on a CPU fusion roughly breaks even).
    fuse: bool | None = None


def register_schema() -> None:
    """The schema `conf/config.yaml` lists first in its defaults."""
    ConfigStore.instance().store(name="greenai_schema", node=TrainConfig, replace=True)


@functools.cache
def _schema() -> DictConfig:
    """The schema as a config, built once per process: building it reads the dataclasses' type
    hints each time (5 ms, a fused trial's largest check); merge() copies it and never changes it."""
    return OmegaConf.structured(TrainConfig)


def without_hydra(cfg: DictConfig) -> DictConfig:
    """The config without Hydra's own node. A job's config has none: then no copy is made
    (copies cost a fused trial dearly)."""
    return OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "hydra"]) if "hydra" in cfg else cfg


def to_typed(cfg: DictConfig) -> TrainConfig:
    """Turn a composed DictConfig (possibly holding `hydra`) into a checked TrainConfig."""
    merged = OmegaConf.merge(_schema(), without_hydra(cfg))
    typed = OmegaConf.to_object(merged)
    assert isinstance(typed, TrainConfig)
    check(typed)
    return typed


def check(cfg: TrainConfig) -> None:
    """Refuse, before any data is read or any run created, values no training can take.

    Layer counts are checked by `models.check_architecture`, which knows the shapes.
    """
    _check_positive("epochs", cfg.epochs)
    _check_positive("batch_size", cfg.batch_size)
    _check_positive("repeats", cfg.repeats)
    _check_optimiser(cfg)
    _check_dataset(cfg)
    if cfg.energy.watts_per_cpu_core <= 0:
        raise ConfigError("energy.watts_per_cpu_core", cfg.energy.watts_per_cpu_core, "must be > 0")
    if cfg.sweep.trials_per_gpu < 1:
        raise ConfigError("sweep.trials_per_gpu", cfg.sweep.trials_per_gpu, "must be a whole number >= 1")
    if cfg.sweep.heartbeat_grace_seconds < 1:
        raise ConfigError(
            "sweep.heartbeat_grace_seconds", cfg.sweep.heartbeat_grace_seconds, "must be a whole number >= 1"
        )
    if cfg.energy.idle_seconds < 0:
        raise ConfigError("energy.idle_seconds", cfg.energy.idle_seconds, "must be >= 0")


def _check_positive(key: str, value: int) -> None:
    if value < 1:
        raise ConfigError(key, value, "must be a whole number >= 1")


def _check_optimiser(cfg: TrainConfig) -> None:
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise ConfigError("lr", cfg.lr, "must be a finite number > 0")
    for key in ("beta1", "beta2"):
        value = getattr(cfg, key)
        if not 0 <= value < 1:
            raise ConfigError(key, value, "must be in [0, 1)")
    if not (cfg.eps > 0 and math.isfinite(cfg.eps)):
        raise ConfigError("eps", cfg.eps, "must be a finite number > 0")
    if not (cfg.weight_decay >= 0 and math.isfinite(cfg.weight_decay)):
        raise ConfigError("weight_decay", cfg.weight_decay, "must be a finite number >= 0")


def _check_dataset(cfg: TrainConfig) -> None:
    ds = cfg.dataset
    for key in ("train_size", "test_size"):
        value = getattr(ds, key)
        if value is not None and value < 10:
            raise ConfigError(f"dataset.{key}", value, "must be >= 10 (one image per class) or null")
    if len(ds.mean) != ds.channels or len(ds.std) != ds.channels:
        raise ConfigError("dataset.mean", list(ds.mean), f"needs one value per channel ({ds.channels})")
