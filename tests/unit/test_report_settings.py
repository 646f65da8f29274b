"""The report's settings: defaults from the typed schema only, errors at composition in one line."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from greenai.errors import ConfigError, one_line
from greenai.report.__main__ import CONF_DIR  # registers the report's schema, as the command does
from greenai.report.settings import EnergyBasis, ReportOptions, check


def composed(*overrides: str) -> ReportOptions:
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = compose(config_name="report", overrides=list(overrides))
    return OmegaConf.to_object(cfg.report)


def test_defaults_come_from_the_schema_and_the_yaml_holds_none():
    options = composed()
    assert options == ReportOptions(out_dir="reports/greenai")
    assert options.energy is EnergyBasis.gross
    yaml = OmegaConf.load(f"{CONF_DIR}/report.yaml")
    assert "report" not in yaml, "one source of truth: report.* defaults live in greenai/report/settings.py"


def test_out_dir_follows_the_experiment_unless_given():
    assert composed("tracking.experiment=rq2").out_dir == "reports/rq2"
    assert composed("tracking.experiment=rq2", "report.out_dir=elsewhere").out_dir == "elsewhere"


def test_energy_is_gross_or_net_and_anything_else_fails_in_one_line_naming_the_key():
    assert composed("report.energy=net").energy is EnergyBasis.net
    with pytest.raises(Exception) as failed:
        composed("report.energy=foo")
    assert one_line(failed.value) == "report.energy=foo: must be one of gross, net"


@pytest.mark.parametrize("key", ["tolerance", "accuracy_margin", "grid_g_co2e_per_kwh"])
def test_negative_settings_are_refused_naming_the_key(key):
    check(ReportOptions(**{key: 0.0}))  # zero is allowed
    with pytest.raises(ConfigError, match=rf"^report\.{key}=-1: must be >= 0$"):
        check(ReportOptions(**{key: -1}))
