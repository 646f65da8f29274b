"""The typed config: defaults from conf/, type and key errors at composition, value checks."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigAttributeError, ValidationError

from greenai.config import DatasetName, EnergyBackend, ModelName, Objective, to_typed
from greenai.errors import ConfigError
from greenai.train import CONF_DIR
from greenai.trial.preflight import check_job


def composed(*overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR):
        return compose(config_name="config", overrides=list(overrides))


def test_defaults_are_the_papers_protocol():
    cfg = to_typed(composed())
    assert (cfg.model.name, cfg.dataset.name, cfg.energy.backend) == (
        ModelName.simplecnn,
        DatasetName.fashion_mnist,
        EnergyBackend.auto,
    )
    assert (cfg.epochs, cfg.batch_size, cfg.seed, cfg.conv_layers, cfg.linear_layers, cfg.relu) == (
        25,
        512,
        1234,
        2,
        3,
        True,
    )
    assert (cfg.lr, cfg.beta1, cfg.beta2, cfg.eps, cfg.weight_decay) == (1e-3, 0.9, 0.999, 1e-8, 0.0)
    assert cfg.objective.name is Objective.accuracy and cfg.objective.directions == ["maximize"]
    assert cfg.tracking.uri == "sqlite:///mlflow.db"


def test_groups_select_models_datasets_and_energy():
    cfg = to_typed(composed("model=denselinear", "dataset=cifar10", "energy=estimate", "objective=accuracy_energy"))
    assert cfg.model.name is ModelName.denselinear
    assert (cfg.dataset.channels, cfg.dataset.height, len(cfg.dataset.mean)) == (3, 32, 3)
    assert cfg.energy.backend is EnergyBackend.estimate
    assert cfg.objective.directions == ["maximize", "minimize"]


def test_energy_off_is_a_backend_not_a_boolean():
    assert to_typed(composed("energy=off")).energy.backend is EnergyBackend.off


@pytest.mark.parametrize(
    ("override", "error", "names"),
    [
        ("epochs=abc", ValidationError, "epochs"),
        ("relu=maybe", ValidationError, "relu"),
        ("epoch=3", ConfigAttributeError, "epoch"),
        ("dataset.rooot=/x", ConfigAttributeError, "rooot"),
    ],
)
def test_wrong_types_and_unknown_keys_fail_naming_the_key(override, error, names):
    with pytest.raises((ConfigCompositionException, error)) as info:
        composed(override)
    assert names in str(info.value) + str(info.value.__cause__)


def test_unknown_model_lists_the_options():
    with pytest.raises(ConfigCompositionException) as info:
        composed("model=resnet")
    message = str(info.value)
    assert "model/resnet" in message and "simplecnn" in message


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("epochs=0", "epochs"),
        ("batch_size=-1", "batch_size"),
        ("repeats=0", "repeats"),
        ("lr=0", "lr"),
        ("lr=-0.1", "lr"),
        ("beta1=1.0", "beta1"),
        ("beta2=-0.1", "beta2"),
        ("eps=0", "eps"),
        ("weight_decay=-1", "weight_decay"),
        ("dataset.train_size=5", "dataset.train_size"),
        ("conv_layers=5", "conv_layers"),
        ("conv_layers=0", "conv_layers"),
        ("linear_layers=0", "linear_layers"),
        ("energy.watts_per_cpu_core=0", "energy.watts_per_cpu_core"),
    ],
)
def test_values_training_cannot_take_are_one_line_errors_naming_the_key(override, key):
    with pytest.raises(ConfigError) as info:
        check_job(composed(override))
    message = str(info.value)
    assert message.startswith(f"{key}=") and "\n" not in message


def test_accuracy_energy_objective_needs_energy():
    with pytest.raises(ConfigError, match="objective=accuracy_energy"):
        check_job(composed("objective=accuracy_energy", "energy=off"))


def test_cifar_takes_five_conv_blocks_fashion_four():
    check_job(composed("dataset=cifar10", "conv_layers=5"))
    with pytest.raises(ConfigError, match="1 to 4"):
        check_job(composed("dataset=fashion_mnist", "conv_layers=5"))


def test_mlflows_environment_variables_are_honoured_unless_overridden(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "team")
    cfg = to_typed(composed())
    assert (cfg.tracking.uri, cfg.tracking.experiment) == ("http://mlflow.example:5000", "team")
    cfg = to_typed(composed("tracking.uri=sqlite:///other.db"))
    assert (cfg.tracking.uri, cfg.tracking.experiment) == ("sqlite:///other.db", "team")


def test_fusing_packed_trials_is_refused_before_anything_runs():
    with pytest.raises(ConfigError, match=r"^fuse=True: packed trials .* use hydra/launcher=fused"):
        check_job(composed("fuse=true", "sweep.trials_per_gpu=4"))
    check_job(composed("fuse=false", "sweep.trials_per_gpu=4"))
