"""The training loop and one trial: every tuned value reaches Adam, seeds reproduce, NaN fails."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir

from greenai.energy.meters import EstimateMeter, OffMeter, Source
from greenai.train import CONF_DIR
from greenai.training import data
from greenai.training.loop import DivergedError, format_progress
from greenai.trial.figures import TrialFigures
from greenai.trial.outcome import Failed, Finished
from greenai.trial.preflight import check_job
from greenai.trial.runner import train_repeats


class Recorder:
    """What TrialRecord keeps of a trial, without the stores: its figures, every epoch by step,
    the optimiser's values; it never prunes."""

    def __init__(self, train_images: int) -> None:
        self.figures = TrialFigures(train_images=train_images)
        self.steps: list[int] = []
        self.applied = None

    def optimizer(self, applied) -> None:
        self.applied = applied.params()

    def epoch(self, step, result) -> bool:
        self.figures.epochs.append(result)
        self.steps.append(step)
        return False

    def repeat_done(self, accuracy, energy_j=None) -> None:
        self.figures.accuracies.append(accuracy)
        self.figures.repeat_energies.append(energy_j)

    def records_done(self, windows) -> None:
        self.figures.records.extend(windows)


def trial(fashion_root, tmp_path, *overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR):
        cfg = compose(
            config_name="config",
            overrides=[f"dataset.root={fashion_root}", f"dataset.cache_dir={tmp_path}/c", *overrides],
        )
    config, spec = check_job(cfg)
    data._LOADED.clear()
    dataset = data.load(config.dataset, torch.device("cpu"))
    record = Recorder(len(dataset.y_train))
    outcome = train_repeats(config, spec, dataset, EstimateMeter(10.0), record)
    if isinstance(outcome, Failed):
        raise outcome.error
    assert isinstance(outcome, Finished) and outcome.values == (record.figures.accuracy,)
    return record.figures, {"epochs": record.steps, "optimizer": record.applied}


def test_every_tuned_hyperparameter_reaches_the_optimiser(fashion_root, tmp_path):
    # The original study read beta2 from the wrong level and never applied it.
    _, seen = trial(
        fashion_root, tmp_path, "epochs=1", "lr=0.0123", "beta1=0.71", "beta2=0.923", "eps=3e-7", "weight_decay=0.045"
    )
    assert seen["optimizer"] == {
        "adam.lr": 0.0123,
        "adam.beta1": 0.71,
        "adam.beta2": 0.923,
        "adam.eps": 3e-7,
        "adam.weight_decay": 0.045,
        # fp32: read back from the live autocast and (absent) scaler.
        "precision.autocast": False,
        "precision.compute_dtype": "float32",
        "precision.grad_scaler": False,
    }


def test_optimizer_read_back_is_what_adam_holds():
    from greenai.training.loop import Hyperparameters, applied_hyperparameters, make_optimizer

    net = torch.nn.Linear(2, 2)
    opt = make_optimizer(net, Hyperparameters(0.5, 0.6, 0.7, 1e-5, 0.1))
    group = opt.param_groups[0]
    assert (group["lr"], group["betas"], group["eps"], group["weight_decay"]) == (0.5, (0.6, 0.7), 1e-5, 0.1)
    assert applied_hyperparameters(opt).params()["adam.beta2"] == 0.7


def test_training_learns_and_reports_every_epoch(fashion_root, tmp_path):
    figures, seen = trial(fashion_root, tmp_path, "epochs=3", "batch_size=32", "lr=0.003")
    assert seen["epochs"] == [1, 2, 3]
    assert figures.accuracy > 0.5, "the bands in the test images are easy to learn"
    metrics = figures.metrics()
    assert metrics["epochs_run"] == 3 and metrics["train_energy_j"] > 0
    assert metrics["energy_j"] == pytest.approx(
        metrics["train_energy_j"] + metrics["eval_energy_j"] + metrics["trial_overhead_energy_j"]
    ), "a trial's energy: training, evaluation and its records between epochs"
    assert len(figures.records) == 1 + 3, "the model's set-up, then one records window per epoch"
    assert metrics["energy_per_train_sample_j"] == pytest.approx(metrics["train_energy_j"] / (400 * 3))
    assert figures.source is Source.estimated


def test_same_seed_same_result_other_seed_other_result(fashion_root, tmp_path):
    a, _ = trial(fashion_root, tmp_path, "epochs=1", "batch_size=32")
    b, _ = trial(fashion_root, tmp_path, "epochs=1", "batch_size=32")
    c, _ = trial(fashion_root, tmp_path, "epochs=1", "batch_size=32", "seed=99")
    assert [e.train_loss for e in a.epochs] == [e.train_loss for e in b.epochs]
    assert [e.train_loss for e in a.epochs] != [e.train_loss for e in c.epochs]


def test_repeats_average_accuracy_and_sum_energy(fashion_root, tmp_path):
    figures, seen = trial(fashion_root, tmp_path, "epochs=2", "repeats=3", "batch_size=64")
    assert len(figures.accuracies) == 3 and seen["epochs"] == [1, 2, 3, 4, 5, 6]
    assert figures.accuracy == pytest.approx(sum(figures.accuracies) / 3)
    assert figures.metrics()["train_energy_j"] == pytest.approx(sum(e.train.total_j for e in figures.epochs))


def test_nan_loss_fails_the_trial_with_a_clear_message(fashion_root, tmp_path):
    with pytest.raises(DivergedError, match=r"training loss became (nan|inf) in epoch \d: the run diverged"):
        trial(fashion_root, tmp_path, "epochs=4", "batch_size=32", "lr=1e30")


def test_progress_line_names_epoch_loss_accuracy_and_joules(fashion_root, tmp_path):
    figures, _ = trial(fashion_root, tmp_path, "epochs=1")
    line = format_progress("simplecnn-conv2", figures.epochs[0], 25)
    assert line.startswith("[simplecnn-conv2] epoch   1/25 loss ") and " acc " in line and " J estimated " in line


def test_energy_off_leaves_energy_figures_empty(fashion_root, tmp_path):
    with initialize_config_dir(config_dir=CONF_DIR):
        cfg = compose(
            config_name="config",
            overrides=[f"dataset.root={fashion_root}", f"dataset.cache_dir={tmp_path}/c", "epochs=1"],
        )
    config, spec = check_job(cfg)
    dataset = data.load(config.dataset, torch.device("cpu"))
    record = Recorder(len(dataset.y_train))
    train_repeats(config, spec, dataset, OffMeter(), record)
    figures = record.figures
    metrics = figures.metrics()
    assert metrics["energy_j"] is None and metrics["train_seconds"] > 0 and figures.source is Source.off
