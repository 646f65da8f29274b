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
    # Any classification builder of torchvision.models (`model.arch`), built with weights=None.
    torchvision = "torchvision"
    # A user's nn.Module (`model._target_`), instantiated with `model.args`.
    custom = "custom"

    @property
    def is_paper(self) -> bool:
        """One of the paper's three models, sized by conv_layers, linear_layers and relu."""
        return self not in (ModelName.torchvision, ModelName.custom)


class DatasetName(str, Enum):
    """The paper's datasets, read by greenai's own checked readers (md5, structure)."""

    fashion_mnist = "fashion_mnist"
    cifar10 = "cifar10"


class DatasetKind(str, Enum):
    paper = "paper"  # fashion_mnist or cifar10 (DatasetName)
    torchvision = "torchvision"  # a torchvision.datasets class, `dataset.name=MNIST`
    image_folder = "image_folder"  # torchvision's ImageFolder on dataset.root/{train,test}/<class>/
    custom = "custom"  # a user's map-style dataset, `dataset._target_`


class Placement(str, Enum):
    auto = "auto"  # on the device if both splits fit in its free memory, else streamed
    device = "device"  # both splits as tensors on the training device (greenai's fast path)
    stream = "stream"  # a DataLoader with workers and pinned memory, batch by batch


class Augment(str, Enum):
    none = "none"
    crop_flip = "crop_flip"  # random crop with padding and horizontal flip, on the device


class Precision(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"  # autocast to bfloat16
    fp16 = "fp16"  # autocast to float16, with a GradScaler


class OptimizerName(str, Enum):
    adam = "adam"
    adamw = "adamw"
    sgd = "sgd"


class SchedulerName(str, Enum):
    none = "none"
    cosine = "cosine"
    onecycle = "onecycle"


class EnergyBackend(str, Enum):
    auto = "auto"
    zeus = "zeus"
    estimate = "estimate"
    off = "off"


class Objective(str, Enum):
    accuracy = "accuracy"
    accuracy_energy = "accuracy_energy"


# Classes greenai's own settings instantiate: greenai's callbacks and sweeper, Hydra's plugins,
# Optuna's samplers and pruners, the logging handlers of Hydra's job logging. A user's app lets
# Hydra instantiate these (greenai.TRUSTED_TARGETS).
GREENAI_TARGETS = ("greenai.*", "hydra_plugins.*", "optuna.samplers.*", "optuna.pruners.*", "logging.*")
# Classes a greenai.train config may instantiate (`_target_`): those, and torchvision's models and
# datasets. `trusted_targets` adds a user's own (a model's or a dataset's `_target_`).
TRUSTED_TARGETS = (*GREENAI_TARGETS, "torchvision.models.*", "torchvision.datasets.*")


# Why `args`: a structured node refuses keys it does not declare, and a user's model or dataset
# brings keys greenai cannot know. They go in `args`, an open dict passed to the class as keyword
# arguments, so the rest of the node stays typed (a misspelt `model.arhc` still fails at
# composition) and the user's keys are params like any other (`model.args.width`). A key that is
# not in a config file is added with `+model.args.width=64`, or all at once `'+model.args={width:64,depth:3}'`.
@dataclass
class ModelConfig:
    name: ModelName = MISSING
    # model=torchvision: a classification builder of torchvision.models (resnet18, vit_b_16, ...).
    arch: str | None = None
    # model=custom: the nn.Module's import path, e.g. mypkg.nets.Net (on the allow-list).
    _target_: str | None = None
    # Keyword arguments of the custom class or the torchvision builder.
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class DatasetConfig:
    # kind=paper: fashion_mnist or cifar10; kind=torchvision: a torchvision.datasets class (MNIST,
    # CIFAR100, SVHN, ...); image_folder and custom: a name for the runs.
    name: str = MISSING
    kind: DatasetKind = DatasetKind.paper
    # kind=custom: a map-style dataset's import path, called as Target(train=True|False, **args).
    _target_: str | None = None
    # Keyword arguments of the dataset class (e.g. EMNIST's split).
    args: dict[str, Any] = field(default_factory=dict)
    # Shape of one image (C, H, W) and number of classes; null = read from the data. The paper's
    # datasets give them, so their layer counts are checked before any file is read. Set for
    # image_folder (and other kinds, to resize), images are converted to this shape.
    channels: int | None = None
    height: int | None = None
    width: int | None = None
    classes: int | None = None
    # Per-channel normalisation constants of the training split; null = computed once from the
    # training split and kept in cache_dir.
    mean: list[float] | None = None
    std: list[float] | None = None
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
    # Training-time augmentation, on the training device, drawn from the trial's seed.
    augment: Augment = Augment.none
    # Where the images live while training: auto decides by size (and logs it).
    placement: Placement = Placement.auto
    # placement=stream: DataLoader worker processes.
    workers: int = 2
    # placement=auto: the share of the device's free memory both splits may take.
    memory_fraction: float = 0.5


@dataclass
class PrecisionConfig:
    name: Precision = Precision.fp32


@dataclass
class OptimizerConfig:
    """Which optimiser; lr, beta1, beta2, eps and weight_decay stay at the top level (Adam's and
    AdamW's, and SGD's lr and weight_decay), where the paper's spaces sweep them."""

    name: OptimizerName = OptimizerName.adam
    # SGD only.
    momentum: float = 0.9
    nesterov: bool = False


@dataclass
class SchedulerConfig:
    """The learning-rate schedule around the top-level lr: cosine decays it to eta_min over the
    epochs (stepped once per epoch); onecycle warms up from lr/div_factor to lr over pct_start of
    the steps, then anneals (stepped once per batch; momentum is left as configured)."""

    name: SchedulerName = SchedulerName.none
    eta_min: float = 0.0
    pct_start: float = 0.3
    div_factor: float = 25.0


@dataclass
class EnergyConfig:
    backend: EnergyBackend = EnergyBackend.auto
    # Used by the estimate: joules per CPU-second (a busy server core draws roughly this).
    watts_per_cpu_core: float = 10.0
    # Seconds of idle measurement, once per sweep and host (0 = not measured). Counters only:
    # the estimate's idle power is zero by construction.
    idle_seconds: float = 3.0
    # Optimiser steps of the warm-up on a trial's shapes before its first measured window (once
    # per process and shape; its energy is the sweep's overhead, never the trial's); 0 = none.
    warmup_steps: int = 2


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
    precision: PrecisionConfig = field(default_factory=PrecisionConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    # Import paths a model's or dataset's `_target_` may name besides TRUSTED_TARGETS: `mypkg.*`
    # (a package and everything under it) or `mypkg.nets.Net` (one class).
    trusted_targets: list[str] = field(default_factory=list)
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
    _check_knobs(cfg)
    _check_model(cfg.model)
    _check_dataset(cfg)
    _check_trusted(cfg.trusted_targets)
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
    if cfg.energy.warmup_steps < 0:
        raise ConfigError("energy.warmup_steps", cfg.energy.warmup_steps, "must be a whole number >= 0")


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


def _check_knobs(cfg: TrainConfig) -> None:
    opt, sched = cfg.optimizer, cfg.scheduler
    if not 0 <= opt.momentum < 1:
        raise ConfigError("optimizer.momentum", opt.momentum, "must be in [0, 1)")
    if opt.name is OptimizerName.sgd and opt.nesterov and opt.momentum == 0:
        raise ConfigError("optimizer.nesterov", True, "Nesterov momentum needs optimizer.momentum > 0")
    if not (sched.eta_min >= 0 and math.isfinite(sched.eta_min)):
        raise ConfigError("scheduler.eta_min", sched.eta_min, "must be a finite number >= 0")
    if not 0 < sched.pct_start < 1:
        raise ConfigError("scheduler.pct_start", sched.pct_start, "must be in (0, 1)")
    if not (sched.div_factor >= 1 and math.isfinite(sched.div_factor)):
        raise ConfigError("scheduler.div_factor", sched.div_factor, "must be a finite number >= 1")


def _check_model(model: ModelConfig) -> None:
    """Which keys each kind of model takes; the names themselves are checked against torchvision
    and the allow-list by training.models, which can import them."""
    if model.name is ModelName.torchvision and not model.arch:
        raise ConfigError("model.arch", model.arch, "model=torchvision needs a builder, e.g. model.arch=resnet18")
    if model.name is ModelName.custom and not model._target_:
        raise ConfigError("model._target_", model._target_, "model=custom needs the class, e.g. mypkg.nets.Net")
    if model.arch and model.name is not ModelName.torchvision:
        raise ConfigError(
            "model.arch", model.arch, f"only model=torchvision takes an arch, not model={model.name.value}"
        )
    if model._target_ and model.name is not ModelName.custom:
        raise ConfigError(
            "model._target_", model._target_, f"only model=custom takes one, not model={model.name.value}"
        )
    if model.args and model.name.is_paper:
        raise ConfigError(
            "model.args", dict(model.args), f"model={model.name.value} takes conv_layers, linear_layers and relu"
        )


def _check_dataset(cfg: TrainConfig) -> None:
    ds = cfg.dataset
    _check_dataset_kind(ds)
    for key in ("train_size", "test_size"):
        value = getattr(ds, key)
        if value is not None and value < 10:
            raise ConfigError(f"dataset.{key}", value, "must be >= 10 (one image per class) or null")
    for key in ("channels", "height", "width", "classes"):
        value = getattr(ds, key)
        if value is not None and value < 1:
            raise ConfigError(f"dataset.{key}", value, "must be a whole number >= 1 or null (read from the data)")
    if (ds.mean is None) != (ds.std is None):
        raise ConfigError("dataset.mean", ds.mean, "give dataset.mean and dataset.std together, or neither (computed)")
    if ds.mean is not None and ds.std is not None and ds.channels is not None:
        if len(ds.mean) != ds.channels or len(ds.std) != ds.channels:
            raise ConfigError("dataset.mean", list(ds.mean), f"needs one value per channel ({ds.channels})")
    if ds.workers < 0:
        raise ConfigError("dataset.workers", ds.workers, "must be a whole number >= 0")
    if not 0 < ds.memory_fraction <= 1:
        raise ConfigError("dataset.memory_fraction", ds.memory_fraction, "must be in (0, 1]")


def _check_dataset_kind(ds: DatasetConfig) -> None:
    if ds.kind is DatasetKind.paper and ds.name not in {n.value for n in DatasetName}:
        raise ConfigError(
            "dataset.name",
            ds.name,
            "the paper's datasets are cifar10 and fashion_mnist; for another one use "
            "dataset=torchvision dataset.name=MNIST (any torchvision.datasets class), dataset=image_folder "
            "or dataset=custom",
        )
    if ds.kind is DatasetKind.custom and not ds._target_:
        raise ConfigError("dataset._target_", ds._target_, "dataset=custom needs the class, e.g. mypkg.data.Images")
    if ds._target_ and ds.kind is not DatasetKind.custom:
        raise ConfigError("dataset._target_", ds._target_, f"only dataset=custom takes one, not kind={ds.kind.value}")
    if ds.kind is DatasetKind.image_folder:
        if ds.root is None:
            raise ConfigError("dataset.root", None, "dataset=image_folder needs the folder that holds train/ and test/")
        if ds.channels not in (1, 3) or ds.height is None or ds.width is None:
            raise ConfigError(
                "dataset.channels", ds.channels, "image_folder converts images to 1 or 3 channels of height x width"
            )


def _check_trusted(patterns: list[str]) -> None:
    for pattern in patterns:
        parts = pattern.removesuffix(".*").split(".")
        if not all(part.isidentifier() for part in parts):
            raise ConfigError(
                "trusted_targets", pattern, "each entry is an import path (mypkg.nets.Net) or a package (mypkg.*)"
            )
