"""Checks that refuse bad input before any data is read, any energy spent or any run created."""

from __future__ import annotations

from omegaconf import DictConfig

from greenai import models
from greenai.config import EnergyBackend, Objective, TrainConfig, to_typed
from greenai.errors import ConfigError


def preflight(cfg: DictConfig) -> tuple[TrainConfig, models.ArchitectureSpec]:
    """The typed config and architecture of one job, or a one-line ConfigError."""
    config = to_typed(cfg)
    spec = models.ArchitectureSpec.from_config(config)
    models.check_architecture(spec)
    if config.objective.name is Objective.accuracy_energy and config.energy.backend is EnergyBackend.off:
        raise ConfigError("objective", "accuracy_energy", "needs energy measured or estimated, not energy=off")
    return config, spec
