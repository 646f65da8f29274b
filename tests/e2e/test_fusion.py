"""Fused trials: K members of one architecture trained as one grouped model, each exactly as alone."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets_on_disk import class_images, write_fashion
from torch import nn

from greenai.config import DatasetConfig, DatasetName, ModelConfig, ModelName, TrainConfig
from greenai.energy.meters import Measurement, OffMeter, Source, combined_source
from greenai.errors import ConfigError
from greenai.training import fusion, models
from greenai.training.data import DeviceData
from greenai.training.loop import Hyperparameters, RunState, fit, make_optimizer

REPO = Path(__file__).resolve().parents[2]
TOLERANCE = 1e-6  # relative: the contract of issue 12, in float64 on the CPU
SIMPLECNN = models.ArchitectureSpec(ModelName.simplecnn, (1, 28, 28), conv_layers=2, linear_layers=3)
DENSEPOLY = models.ArchitectureSpec(ModelName.densepoly, (1, 28, 28), conv_layers=0, linear_layers=3)
# Three members that differ in everything a sweep tunes: seed, lr, beta1, beta2, eps, weight decay.
MEMBERS = [
    fusion.Member(1234, Hyperparameters(lr=3e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0)),
    fusion.Member(7, Hyperparameters(lr=1e-3, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.01)),
    fusion.Member(99, Hyperparameters(lr=5e-3, beta1=0.7, beta2=0.95, eps=1e-7, weight_decay=0.05)),
]


def memory_data(train: int = 200, test: int = 100, dtype: torch.dtype = torch.float64) -> DeviceData:
    """Small class-band images, normalised, written straight into tensors (no files)."""

    def split(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = np.arange(count) % 10
        images = torch.tensor(class_images(labels, (28, 28), seed), dtype=dtype).unsqueeze(1) / 255.0
        return (images - 0.3) / 0.35, torch.tensor(labels, dtype=torch.long)

    x_train, y_train = split(train, 1)
    x_test, y_test = split(test, 2)
    return DeviceData(x_train, y_train, x_test, y_test, "memory")


def alone(spec, member, data, epochs, batch_size=50):
    """The unfused path of trial.runner.train_repeats: seed, build, loop.make_optimizer, loop.fit."""
    net = fusion.alone_model(spec, member.seed).to(data.x_train.dtype)
    optimizer = make_optimizer(net, member.hyperparameters)
    run = fit(
        net,
        optimizer,
        data,
        epochs=epochs,
        batch_size=batch_size,
        seed=member.seed,
        meter=OffMeter(),
    )
    assert run.state is RunState.finished
    return net, run.epochs


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / a.abs().max().clamp_min(1e-300)).item()


def state_difference(net: nn.Module, twin: nn.Module) -> float:
    """Largest relative difference over every tensor of the state (weights, BatchNorm statistics)."""
    own, other = net.state_dict(), twin.state_dict()
    assert own.keys() == other.keys()
    return max(relative_difference(own[name], other[name]) for name in own)


def figures_difference(results, twin_results) -> float:
    """Largest relative difference over every per-epoch figure."""
    assert len(results) == len(twin_results)
    worst = 0.0
    for a, b in zip(results, twin_results, strict=True):
        for figure in ("train_loss", "test_loss", "test_accuracy"):
            x, y = getattr(a, figure), getattr(b, figure)
            worst = max(worst, abs(x - y) / max(abs(x), 1e-300))
    return worst


@pytest.mark.parametrize("spec", [SIMPLECNN, DENSEPOLY], ids=lambda s: s.name)
def test_every_member_trains_exactly_as_it_would_alone(spec):
    data = memory_data()
    group = fusion.FusedGroup(spec, MEMBERS, dtype=torch.float64)
    runs = fusion.fit_group(group, data, epochs=3, batch_size=50, meter=OffMeter())
    for member, run in enumerate(runs):
        net, results = alone(spec, MEMBERS[member], data, epochs=3)
        fused = group.member_model(member)
        assert run.state is RunState.finished and len(run.epochs) == 3
        assert state_difference(net, fused) <= TOLERANCE and figures_difference(results, run.epochs) <= TOLERANCE
        # The comparison means something only if training moved the weights far beyond it.
        start = fusion.alone_model(spec, MEMBERS[member].seed).double()
        first = next(iter(start.state_dict()))
        assert relative_difference(start.state_dict()[first], net.state_dict()[first]) > 1e3 * TOLERANCE


def test_initial_weights_are_the_unfused_builds():
    group = fusion.FusedGroup(SIMPLECNN, MEMBERS)
    for member, spec_member in enumerate(MEMBERS):
        built = fusion.alone_model(SIMPLECNN, spec_member.seed).state_dict()
        fused = group.member_model(member).state_dict()
        assert all(torch.equal(built[name], fused[name]) for name in built)


def test_each_member_draws_the_batches_it_would_draw_alone():
    data = memory_data(train=120, dtype=torch.float32)
    seeds = [5, 6, 7]
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    fused = list(fusion.group_batches(data, 50, generators))
    for k, seed in enumerate(seeds):
        own = list(data.train_batches(50, torch.Generator().manual_seed(seed)))
        assert len(own) == len(fused) == 3
        for (x, y), (xs, ys) in zip(own, fused, strict=True):
            assert torch.equal(xs[:, k : k + 1], x) and torch.equal(ys[k], y)


def test_a_member_trains_the_same_whether_or_not_another_is_dropped_midway():
    data = memory_data()
    kept = fusion.FusedGroup(SIMPLECNN, MEMBERS, dtype=torch.float64)
    kept_runs = fusion.fit_group(kept, data, epochs=3, batch_size=50, meter=OffMeter())
    pruned = fusion.FusedGroup(SIMPLECNN, MEMBERS, dtype=torch.float64)
    seen: list[list[int]] = []

    def prune_member_1_after_epoch_1(results):
        seen.append(sorted(results))
        return [1] if next(iter(results.values())).epoch == 1 else []

    runs = fusion.fit_group(
        pruned, data, epochs=3, batch_size=50, meter=OffMeter(), on_epoch=prune_member_1_after_epoch_1
    )
    assert seen == [[0, 1, 2], [0, 2], [0, 2]] and pruned.active == [0, 2]
    assert runs[1].state is RunState.stopped and len(runs[1].epochs) == 1
    assert figures_difference(runs[1].epochs, kept_runs[1].epochs[:1]) <= TOLERANCE
    for member in (0, 2):
        assert runs[member].state is RunState.finished
        # Weights, Adam moments and BatchNorm statistics survived the drop: nothing drifts beyond
        # rounding (a group of another size rounds the conv biases' zero gradients differently).
        assert state_difference(kept.member_model(member), pruned.member_model(member)) <= TOLERANCE
        assert figures_difference(kept_runs[member].epochs, runs[member].epochs) <= TOLERANCE


def test_a_diverging_member_is_dropped_and_reported_while_the_others_go_on():
    data = memory_data()
    group = fusion.FusedGroup(SIMPLECNN, MEMBERS, dtype=torch.float64)
    with torch.no_grad():
        group.model.flat[1] = float("nan")  # member 1's weights, and only its, are poisoned
    hook_saw = []
    runs = fusion.fit_group(
        group, data, epochs=2, batch_size=50, meter=OffMeter(), on_epoch=lambda r: hook_saw.append(sorted(r))
    )
    assert hook_saw == [[0, 1, 2], [0, 2]], "the hook sees the diverged epoch, so its energy is logged"
    assert runs[1].state is RunState.diverged and len(runs[1].epochs) == 1
    assert str(runs[1].error) == "training loss became nan in epoch 1: the run diverged (try a smaller lr)"
    twins = fusion.FusedGroup(SIMPLECNN, [MEMBERS[0], MEMBERS[2]], dtype=torch.float64)
    twin_runs = fusion.fit_group(twins, data, epochs=2, batch_size=50, meter=OffMeter())
    for member, twin in ((0, 0), (2, 1)):
        assert runs[member].state is RunState.finished and runs[member].error is None
        assert state_difference(group.member_model(member), twins.member_model(twin)) <= TOLERANCE
        assert figures_difference(runs[member].epochs, twin_runs[twin].epochs) <= TOLERANCE


def test_every_members_hyperparameters_are_read_back_from_the_optimiser():
    group = fusion.FusedGroup(DENSEPOLY, MEMBERS)
    for member, spec_member in enumerate(MEMBERS):
        hp = spec_member.hyperparameters
        assert group.hyperparameters(member).params() == {
            "adam.lr": hp.lr,
            "adam.beta1": hp.beta1,
            "adam.beta2": hp.beta2,
            "adam.eps": hp.eps,
            "adam.weight_decay": hp.weight_decay,
        }
    group.drop([0])
    assert group.optimizer.applied(0).params()["adam.lr"] == MEMBERS[1].hyperparameters.lr
    assert group.hyperparameters(2).params()["adam.beta2"] == MEMBERS[2].hyperparameters.beta2
    with pytest.raises(ValueError, match="member 0 is not in the group"):
        group.hyperparameters(0)


class FakeMeter:
    """Known joules per window: training 120 J of GPU and 30 J of CPU over 6 s, evaluation 12 J over 3 s."""

    source = Source.measured
    description = "fake"

    def begin(self, name: str) -> None:
        pass

    def end(self, name: str) -> Measurement:
        return (
            Measurement(6.0, 120.0, 30.0, Source.measured)
            if name == "train"
            else Measurement(3.0, 12.0, None, Source.measured)
        )


def test_each_window_is_shared_equally_among_the_members_active_in_it():
    group = fusion.FusedGroup(SIMPLECNN, MEMBERS)
    runs = fusion.fit_group(
        group,
        memory_data(dtype=torch.float32),
        epochs=2,
        batch_size=100,
        meter=FakeMeter(),
        on_epoch=lambda r: [2] if next(iter(r.values())).epoch == 1 else [],
    )
    # Each member's share: its part of the joules, and of the seconds idle power is charged for.
    assert runs[0].epochs[0].train == Measurement(6.0, 40.0, 10.0, Source.fused, charged_seconds=2.0, shared_by=3)
    assert runs[0].epochs[0].eval == Measurement(3.0, 4.0, None, Source.fused, charged_seconds=1.0, shared_by=3)
    second = Measurement(6.0, 60.0, 15.0, Source.fused, charged_seconds=3.0, shared_by=2)
    assert runs[0].epochs[1].train == second, "two members left in epoch 2"
    spent = sum(r.train.total_j + r.eval.total_j for run in runs for r in run.epochs)
    assert spent == pytest.approx(2 * (150 + 12)), "the shares add up to the group's windows"
    assert combined_source([r.train.source for r in runs[0].epochs]) is Source.fused


def test_without_energy_a_share_has_time_only():
    assert Measurement(4.0, None, None, Source.off).share(4) == Measurement(
        4.0, None, None, Source.off, charged_seconds=1.0, shared_by=4
    )
    assert combined_source([Source.fused, Source.measured]) is Source.partial


def config(**changes) -> TrainConfig:
    dataset = DatasetConfig(name=DatasetName.fashion_mnist, channels=1, height=28, width=28, mean=[0.286], std=[0.353])
    return replace(TrainConfig(model=ModelConfig(ModelName.simplecnn), dataset=dataset), **changes)


def test_configs_group_by_what_must_match_and_the_rest_are_apart_not_refused():
    base = config()
    dense = replace(base, model=ModelConfig(ModelName.densepoly))
    cfgs = [
        base,  # 0
        replace(base, lr=0.01, beta1=0.5, beta2=0.9, eps=1e-7, weight_decay=0.1, seed=9, repeats=3),  # 1: fuses with 0
        replace(base, conv_layers=3),  # 2: another architecture
        replace(base, batch_size=64),  # 3
        replace(base, relu=False),  # 4
        replace(base, epochs=3),  # 5
        replace(base, dataset=replace(base.dataset, train_size=1000)),  # 6
        replace(base, device="cuda"),  # 7
        dense,  # 8
        replace(dense, conv_layers=4, lr=0.02),  # 9: dense models ignore conv_layers, so it fuses with 8
        replace(base, seed=3),  # 10: fuses with 0
    ]
    assert fusion.group_for_fusion(cfgs) == [[0, 1, 10], [2], [3], [4], [5], [6], [7], [8, 9]]
    assert fusion.group_for_fusion(cfgs, max_size=2) == [[0, 1], [10], [2], [3], [4], [5], [6], [7], [8, 9]]


@pytest.mark.parametrize(
    ("layers", "named"),
    [
        ([nn.Conv2d(1, 3, 3), nn.Dropout(), nn.Flatten(), nn.Linear(3 * 26 * 26, 10)], "layer 1 (Dropout)"),
        ([nn.Flatten(), nn.Linear(784, 10), nn.Softmax(dim=1)], "layer 2 (Softmax)"),
        ([nn.Flatten(), nn.Linear(784, 10), nn.Sequential(nn.Flatten(), nn.AdaptiveAvgPool2d(1))], "layer 3 (Adaptive"),
        ([nn.Linear(28, 10), nn.Flatten()], "layer 0 (Linear)"),
        ([nn.Conv2d(3, 3, 3, groups=3), nn.Flatten(), nn.Linear(3 * 26 * 26, 10)], "layer 0 (Conv2d)"),
    ],
)
def test_a_model_whose_layers_cannot_be_grouped_is_refused_in_one_line(layers, named):
    with pytest.raises(ConfigError) as refused:
        fusion.fuse([nn.Sequential(*layers)])
    assert refused.value.key == "fuse" and named in str(refused.value) and "\n" not in str(refused.value)


# A user's model (not one of the paper's): nested blocks, other activations and pools. Built by
# models.build through Hydra's instantiate, as `model=custom model._target_=usernets.Net` builds it.
USER_NETS = """
from torch import nn


class Block(nn.Sequential):
    def __init__(self, cin, cout, act):
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), act)


class Net(nn.Sequential):
    def __init__(self, num_classes, in_channels, width=4):
        super().__init__(
            Block(in_channels, width, nn.GELU()),
            nn.AvgPool2d(2),
            Block(width, 2 * width, nn.SiLU()),
            nn.AdaptiveMaxPool2d(3),
            nn.Flatten(),
            nn.Linear(2 * width * 9, 16),
            nn.Tanh(),
            nn.Linear(16, num_classes),
        )


class Residual(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, num_classes))

    def forward(self, x):
        return self.body(x) + 1
"""


@pytest.fixture
def user_spec(tmp_path, monkeypatch):
    (tmp_path / "usernets.py").write_text(USER_NETS)
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = models.ArchitectureSpec(ModelName.custom, (1, 28, 28), 0, 0, target="usernets.Net", args=(("width", "3"),))
    yield replace(spec, trusted=("usernets.*",))
    sys.modules.pop("usernets", None)


def test_a_users_model_of_groupable_layers_trains_exactly_as_alone(user_spec):
    assert [type(layer).__name__ for layer in fusion.flat_layers(models.build(user_spec))][:4] == [
        "Conv2d",
        "BatchNorm2d",
        "GELU",
        "AvgPool2d",
    ], "nested blocks are opened"
    data = memory_data()
    group = fusion.FusedGroup(user_spec, MEMBERS, dtype=torch.float64)
    runs = fusion.fit_group(group, data, epochs=2, batch_size=50, meter=OffMeter())
    for member, run in enumerate(runs):
        net, results = alone(user_spec, MEMBERS[member], data, epochs=2)
        assert run.state is RunState.finished
        assert state_difference(net, group.member_model(member)) <= TOLERANCE
        assert figures_difference(results, run.epochs) <= TOLERANCE
        start = fusion.alone_model(user_spec, MEMBERS[member].seed).double()
        assert state_difference(start, net) > 1e3 * TOLERANCE, "training moved the weights"


def test_other_models_run_unfused_and_the_log_says_why_once(user_spec, caplog):
    from greenai.trial import setup

    residual = replace(user_spec, target="usernets.Residual", args=())
    assert setup.fusion_obstacle(config(), None, user_spec) is None
    assert setup.fusion_obstacle(config(), None, residual) == (
        "the model (residual) cannot group a Residual: fusion takes nn.Sequential layers, not a forward"
    )
    resnet = models.ArchitectureSpec(ModelName.torchvision, (1, 28, 28), 0, 0, arch="resnet18")
    cpu = torch.device("cpu")
    with caplog.at_level("INFO", logger="greenai.train"):
        why = "the model (resnet18) cannot group a ResNet: fusion takes nn.Sequential layers, not a forward"
        assert setup.unfused_reason(config(fuse=True), cpu, packed=False, spec=resnet) == why
        assert setup.unfused_reason(config(fuse=True), cpu, packed=False, spec=resnet) == why
    said = [r.message for r in caplog.records if "running unfused" in r.message]
    assert said == [f"fuse: running unfused: {why}"], "said once per process"


def test_the_papers_models_can_all_be_fused():
    for spec in (SIMPLECNN, DENSEPOLY, replace(DENSEPOLY, model=ModelName.denselinear), replace(SIMPLECNN, relu=False)):
        fusion.check_fusable(models.build(spec))


def test_a_fused_model_refuses_to_be_moved_after_it_is_built():
    model = fusion.fuse([models.build(DENSEPOLY)])
    with pytest.raises(RuntimeError, match="built on its device and dtype"):
        model.double()


@pytest.mark.slow
def test_benchmark_runs_at_a_tiny_size(tmp_path):
    root = write_fashion(tmp_path / "fashion", train=300, test=100)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [
            sys.executable,
            "benchmarks/fusion.py",
            "--ks",
            "1,2",
            "--epochs",
            "1",
            "--train-size",
            "300",
            "--test-size",
            "100",
            "--device",
            "cpu",
            "--root",
            str(root),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    for k in (1, 2):
        row = [line for line in lines if line.lstrip().startswith(f"K={k} ")]
        assert len(row) == 1, proc.stdout
        assert "s/trial" in row[0] and "J/trial" in row[0] and "ratio" in row[0] and "accuracy" in row[0]
    assert any("sequential baseline" in line for line in lines)
    assert "estimated" in proc.stdout, "energy figures carry their label"
