"""The report's typed settings: the schema `conf/report.yaml` is composed against.

Every default of `report.*` lives here and only here, the one that needs an interpolation
included (`out_dir`, from the experiment's name): conf/report.yaml selects this schema and the
tracking group and sets Hydra's run folder, nothing more. A wrong type, an unknown key or an
`energy` other than gross or net fails at composition, in one line that names the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from greenai.config import TrackingConfig
from greenai.errors import ConfigError

# Ember, Global Electricity Review 2024: world average carbon intensity of electricity
# generation in 2023, life-cycle emissions in CO2 equivalent.
DEFAULT_G_CO2E_PER_KWH = 480.0


class EnergyBasis(str, Enum):
    """Which energy the report counts."""

    gross = "gross"  # everything the devices drew
    net = "net"  # minus idle power x time (needs a measured idle power)


@dataclass
class ReportSettings:
    """How the report analyses the runs."""

    # "Within tolerance of the best": the round a searcher first came this close to its final best.
    tolerance: float = 0.005
    # "Cheapest trial within this much accuracy of the most accurate one" (0.01 = 1 point).
    accuracy_margin: float = 0.01
    grid_g_co2e_per_kwh: float = DEFAULT_G_CO2E_PER_KWH
    # Electricity price per kWh for a cost column (None = no cost column).
    price_per_kwh: float | None = None
    currency: str = "EUR"
    energy: EnergyBasis = EnergyBasis.gross


@dataclass
class ReportOptions(ReportSettings):
    """`report.*`: which runs, where the files go, and the settings of the analysis."""

    # One sweep (its parent run's id or name); None = every run of the experiment.
    sweep: str | None = None
    # Where report.md and the PNG figures go, from the folder the command was started in.
    out_dir: str = "reports/${tracking.experiment}"
    # Keep the runs read in a file beside report.md, and read again only what changed (see
    # greenai/report/run_cache.py for what counts as changed); false: read every run, keep nothing.
    cache: bool = True


@dataclass
class ReportConfig:
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    report: ReportOptions = field(default_factory=ReportOptions)


def check(options: ReportSettings) -> None:
    """Refuse values no report can use (types and the energy basis are checked at composition)."""
    for key in ("tolerance", "accuracy_margin", "grid_g_co2e_per_kwh"):
        value = getattr(options, key)
        if value < 0:
            raise ConfigError(f"report.{key}", value, "must be >= 0")
