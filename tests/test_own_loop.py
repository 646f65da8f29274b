"""A user's own Hydra app (docs/your-own-loop.md) composes greenai's settings under `greenai`
and greenai's searchers and pruners from the groups greenai registers; greenai's sweeper reads
its study's settings from there. The app's config is written by the tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from greenai.train import CONF_DIR
from greenai.trial.sweep_identity import study_name

CONFIG = """
defaults:
  - greenai: trial
  - _self_

epochs: 3
pause: 0.05
score: true
x: 0.5
greenai:
  metric: score
  energy:
    backend: estimate
"""


@pytest.fixture
def app_conf(tmp_path: Path) -> Path:
    """The app's config folder."""
    conf = tmp_path / "app" / "conf"
    conf.mkdir(parents=True)
    (conf / "config.yaml").write_text(CONFIG)
    return conf


def composed(config_dir: Path, name: str, overrides: list[str]):
    import greenai.sweep.sweeper  # noqa: F401 (Hydra imports it as it loads its plugins: the groups)

    with initialize_config_dir(config_dir=str(config_dir)):
        return compose(config_name=name, overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize("searcher", ["grid", "random", "bayes", "tpe"])
def test_an_apps_searcher_is_greenais_own(app_conf, searcher):
    """`greenai/searcher=X` in an app gives greenai's sweeper the same sampler settings as
    `searcher=X` in greenai's own config, its seed read from greenai.seed."""
    ours = composed(Path(CONF_DIR), "config", [f"searcher={searcher}"]).hydra.sweeper
    theirs = composed(app_conf, "config", [f"greenai/searcher={searcher}"]).hydra.sweeper
    mine, yours = (OmegaConf.to_container(s, resolve=False) for s in (ours, theirs))
    assert (mine["sampler"].pop("seed"), yours["sampler"].pop("seed")) == ("${seed}", "${greenai.seed}")
    assert yours == mine


@pytest.mark.parametrize("pruner", ["none", "median", "successive_halving", "hyperband"])
def test_an_apps_pruner_is_greenais_own(app_conf, pruner):
    ours = composed(Path(CONF_DIR), "config", [f"pruner={pruner}"]).sweep.pruner
    theirs = composed(app_conf, "config", [f"greenai/pruner={pruner}"]).greenai.sweep.pruner
    plain = [OmegaConf.to_container(p) if p is not None else None for p in (ours, theirs)]
    assert plain[1] == plain[0] and (plain[0] is None) == (pruner == "none")


def test_greenais_sweeper_reads_an_apps_settings_from_its_greenai_node(app_conf):
    """The sweeper's study storage, name and directions come from `greenai.*`, as they come from
    `sweep.*` and `objective.*` in greenai's own config; the study is named after the app."""
    cfg = composed(
        app_conf,
        "config",
        ["greenai/searcher=tpe", "greenai.sweep.storage=sqlite:///s.db", "greenai.objective.directions=[minimize]"],
    )
    assert cfg.hydra.sweeper.storage == "sqlite:///s.db" and cfg.hydra.sweeper.study_name is None
    assert list(cfg.hydra.sweeper.direction) == ["minimize"]
    assert study_name(cfg).startswith(f"{cfg.hydra.job.name}-tpe-")
    ours = composed(Path(CONF_DIR), "config", ["searcher=tpe", "sweep.storage=sqlite:///t.db"])
    assert ours.hydra.sweeper.storage == "sqlite:///t.db" and list(ours.hydra.sweeper.direction) == ["maximize"]
