"""Training knobs that are energy practices: precision, optimiser, schedule. Each value the
config sets is read back from the live objects into the run, as Adam's are."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from hydra import compose, initialize_config_dir

from greenai.config import OptimizerName, Precision, SchedulerConfig, SchedulerName
from greenai.errors import ConfigError
from greenai.train import CONF_DIR
from greenai.training import inputs, precision
from greenai.training.optim import (
    AdamWHyperparameters,
    SGDHyperparameters,
    applied_hyperparameters,
    make_optimizer,
    make_schedule,
)
from greenai.training.precision import Amp, check_precision
from greenai.trial.figures import TrialFigures
from greenai.trial.outcome import Finished
from greenai.trial.preflight import check_job
from greenai.trial.runner import train_repeats
from greenai.trial.setup import fusion_obstacle

CPU = torch.device("cpu")


class Recorder:
    def __init__(self, train_images: int) -> None:
        self.figures = TrialFigures(train_images=train_images)
        self.applied: dict[str, object] = {}

    def optimizer(self, applied) -> None:
        self.applied = applied.params()

    def epoch(self, step, result) -> bool:
        self.figures.epochs.append(result)
        return False

    def repeat_done(self, accuracy, energy_j=None) -> None:
        self.figures.accuracies.append(accuracy)
        self.figures.repeat_energies.append(energy_j)

    def records_done(self, windows) -> None:
        self.figures.records.extend(windows)


def composed(fashion_root, tmp_path, *overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR):
        return compose(
            config_name="config",
            overrides=[f"dataset.root={fashion_root}", f"dataset.cache_dir={tmp_path}/c", "batch_size=100", *overrides],
        )


def trained(fashion_root, tmp_path, *overrides: str):
    config, spec = check_job(composed(fashion_root, tmp_path, *overrides))
    data = inputs.load(config.dataset, CPU)
    record = Recorder(data.train_count)
    outcome = train_repeats(config, spec, data, _off(), record)
    assert isinstance(outcome, Finished), outcome
    return config, record


def _off():
    from greenai.energy.meters import OffMeter

    return OffMeter()


def test_sgd_with_nesterov_reaches_the_optimiser_and_the_run(fashion_root, tmp_path):
    config, record = trained(
        fashion_root, tmp_path, "epochs=1", "optimizer=sgd", "lr=0.05", "optimizer.momentum=0.8", "weight_decay=0.01"
    )
    assert config.optimizer.name is OptimizerName.sgd
    assert {k: v for k, v in record.applied.items() if k.startswith("sgd.")} == {
        "sgd.lr": 0.05,
        "sgd.momentum": 0.8,
        "sgd.nesterov": True,
        "sgd.weight_decay": 0.01,
        "sgd.dampening": 0.0,
    }
    assert not any(k.startswith("adam") for k in record.applied)


def test_adamw_is_read_back_as_adamw():
    net = torch.nn.Linear(2, 2)
    opt = make_optimizer(net, AdamWHyperparameters(0.01, 0.8, 0.99, 1e-7, 0.05))
    assert type(opt) is torch.optim.AdamW
    assert applied_hyperparameters(opt).params() == {
        "adamw.lr": 0.01,
        "adamw.beta1": 0.8,
        "adamw.beta2": 0.99,
        "adamw.eps": 1e-7,
        "adamw.weight_decay": 0.05,
    }
    sgd = make_optimizer(net, SGDHyperparameters(0.1, 0.9, False, 0.0))
    assert applied_hyperparameters(sgd) == SGDHyperparameters(0.1, 0.9, False, 0.0, 0.0)


def test_cosine_steps_once_per_epoch_to_eta_min():
    net = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    schedule = make_schedule(SchedulerConfig(SchedulerName.cosine, eta_min=0.1), opt, epochs=4, steps_per_epoch=10)
    for _ in range(10):
        schedule.after_batch()
    assert opt.param_groups[0]["lr"] == 1.0, "not stepped per batch"
    for _ in range(4):
        schedule.after_epoch()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)
    assert schedule.params() == {"cosine.T_max": 4, "cosine.eta_min": 0.1, "cosine.stepped": "per epoch"}


def test_onecycle_peaks_at_lr_and_leaves_momentum_alone(fashion_root, tmp_path):
    net = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(net.parameters(), lr=0.01, betas=(0.7, 0.99))
    cfg = SchedulerConfig(SchedulerName.onecycle, pct_start=0.25, div_factor=10.0)
    schedule = make_schedule(cfg, opt, epochs=2, steps_per_epoch=10)
    seen = []
    for _ in range(20):
        opt.step()
        schedule.after_batch()
        seen.append(opt.param_groups[0]["lr"])
    assert max(seen) == pytest.approx(0.01) and opt.param_groups[0]["betas"] == (0.7, 0.99)
    params = schedule.params()
    assert params["onecycle.max_lr"] == 0.01 and params["onecycle.initial_lr"] == pytest.approx(0.001)
    assert (params["onecycle.total_steps"], params["onecycle.warmup_steps"]) == (20, 5)


def test_a_trial_reads_its_schedule_back_into_the_run(fashion_root, tmp_path):
    # 400 images, batch 100: 4 steps an epoch.
    _, record = trained(fashion_root, tmp_path, "epochs=2", "scheduler=onecycle", "lr=0.004")
    assert record.applied["adam.lr"] == 0.004, "the optimiser's lr as configured: the schedule's peak"
    assert record.applied["onecycle.total_steps"] == 8 and record.applied["onecycle.max_lr"] == 0.004


@pytest.mark.parametrize(("name", "dtype", "scaler"), [("bf16", "bfloat16", False), ("fp16", "float16", True)])
def test_mixed_precision_trains_and_says_which(fashion_root, tmp_path, name, dtype, scaler):
    config, record = trained(fashion_root, tmp_path, "epochs=2", f"precision={name}", "lr=0.003")
    assert config.precision.name is Precision(name)
    assert record.applied["precision.autocast"] is True and record.applied["precision.compute_dtype"] == dtype
    assert record.applied["precision.grad_scaler"] is scaler
    assert record.figures.accuracy > 0.5, "the bands are easy to learn in any precision"


def test_autocast_really_computes_in_the_precision():
    amp = Amp(Precision.bf16, CPU)
    with amp.autocast():
        assert torch.nn.Linear(4, 4)(torch.ones(1, 4)).dtype == torch.bfloat16


def test_bf16_on_a_device_without_it_is_refused_in_one_line(monkeypatch):
    check_precision(Precision.bf16, CPU, "cpu")
    monkeypatch.setattr(precision, "bf16_supported", lambda device: False)
    with pytest.raises(ConfigError, match=r"^precision=bf16: Tesla V100 has no bfloat16 .*use precision=fp16 or fp32$"):
        check_precision(Precision.bf16, CPU, "Tesla V100")
    check_precision(Precision.fp16, CPU, "Tesla V100")


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ("optimizer=sgd", "optimizer=sgd (fusion trains Adam only)"),
        ("optimizer=adamw", "optimizer=adamw (fusion trains Adam only)"),
        ("precision=bf16", "precision=bf16 (fusion trains in float32 only)"),
        ("scheduler=cosine", "scheduler=cosine (fusion trains at a constant lr only)"),
        ("dataset.augment=crop_flip", "dataset.augment=crop_flip (fused members see their images unaugmented)"),
    ],
)
def test_knobs_fusion_cannot_take_run_unfused_with_a_reason(fashion_root, tmp_path, override, reason):
    config, _ = check_job(composed(fashion_root, tmp_path, "fuse=true", override))
    assert fusion_obstacle(config, None) == reason
    plain, _ = check_job(composed(fashion_root, tmp_path, "fuse=true"))
    assert fusion_obstacle(plain, None) is None


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("optimizer.momentum=1.0", "optimizer.momentum"),
        ("scheduler.pct_start=0", "scheduler.pct_start"),
        ("scheduler.eta_min=-1", "scheduler.eta_min"),
    ],
)
def test_knob_values_training_cannot_take_are_one_line(fashion_root, tmp_path, override, key):
    with pytest.raises(ConfigError) as info:
        check_job(composed(fashion_root, tmp_path, override))
    assert str(info.value).startswith(f"{key}=") and "\n" not in str(info.value)


@pytest.mark.slow
def test_a_search_space_ranges_over_the_knobs(greenai, tiny):
    from store_readers import mlflow_runs, trial_runs

    greenai("-m", "searcher=random", "space=knobs", "hydra.sweeper.n_trials=3", *tiny)
    trials = trial_runs(mlflow_runs(greenai.cwd))
    assert [r.info.status for r in trials] == ["FINISHED"] * 3
    for run in trials:
        params = run.data.params
        optimizer, dtype = params["optimizer.name"], params["precision.compute_dtype"]
        assert params[f"{optimizer}.lr"] == params["lr"], "each trial's optimiser, read back under its own name"
        assert dtype == {"fp32": "float32", "bf16": "bfloat16"}[params["precision.name"]]
        if params["scheduler.name"] != "none":
            assert f"{params['scheduler.name']}.stepped" in params


@pytest.mark.gpu
def test_precision_streaming_and_augmentation_on_a_gpu(fashion_root, tmp_path):
    """On a CUDA GPU: streamed batches (pinned, uint8 normalised on the GPU) equal the
    device-resident ones; fp16 trains through its GradScaler and bf16 where the GPU has it;
    crop_flip draws on the GPU, repeatably."""
    from greenai.config import DatasetConfig, Placement
    from greenai.training.augment import CropFlip
    from greenai.training.loop import Hyperparameters, fit

    cuda = torch.device("cuda", 0)
    cfg = DatasetConfig(
        name="fashion_mnist",
        channels=1,
        height=28,
        width=28,
        classes=10,
        mean=[0.286],
        std=[0.353],
        root=str(fashion_root),
        cache_dir=str(tmp_path / "c"),
    )
    on_gpu = inputs.load(cfg, cuda)
    inputs._LOADED.clear()
    streamed = inputs.load(replace(cfg, placement=Placement.stream, workers=2), cuda)
    assert on_gpu.placement == "device" and streamed.placement == "streamed"
    for (xa, ya), (xb, yb) in zip(
        on_gpu.train_batches(64, torch.Generator().manual_seed(1)),
        streamed.train_batches(64, torch.Generator().manual_seed(1)),
        strict=True,
    ):
        assert xb.device.type == "cuda" and torch.equal(xa, xb) and torch.equal(ya, yb)
    names = [Precision.fp16] + ([Precision.bf16] if precision.bf16_supported(cuda) else [])
    for name in names:
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)).to(cuda)
        amp = Amp(name, cuda)
        opt = make_optimizer(net, Hyperparameters(1e-2, 0.9, 0.999, 1e-8, 0.0))
        run = fit(net, opt, streamed, epochs=2, batch_size=64, seed=3, meter=_off(), amp=amp)
        assert run.epochs[-1].test_accuracy > 0.5 and amp.params()["precision.autocast"] is True
        assert amp.params()["precision.grad_scaler"] is (name is Precision.fp16)
    images = on_gpu.x_train[:8]
    assert torch.equal(CropFlip(5, cuda)(images), CropFlip(5, cuda)(images))
