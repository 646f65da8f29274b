"""The paper's models: shapes, sizes and the layer counts an image can take."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from greenai.config import ModelName
from greenai.errors import ConfigError
from greenai.training.models import ArchitectureSpec, build, max_conv_layers, summarize

FASHION, CIFAR = (1, 28, 28), (3, 32, 32)


def linear_widths(net: nn.Module) -> list[int]:
    return [m.out_features for m in net if isinstance(m, nn.Linear)]


@pytest.mark.parametrize(
    ("model", "shape", "widths"),
    [
        (ModelName.densepoly, FASHION, [392, 196, 10]),
        (ModelName.densepoly, CIFAR, [1536, 768, 10]),
        (ModelName.denselinear, FASHION, [522, 261, 10]),
        (ModelName.denselinear, CIFAR, [2048, 1024, 10]),
    ],
)
def test_dense_widths_match_the_paper(model, shape, widths):
    assert linear_widths(build(ArchitectureSpec(model, shape, 0, 3))) == widths


@pytest.mark.parametrize(("conv", "params"), [(1, 218_047), (2, 122_966), (3, 40_028), (4, 26_810)])
def test_simplecnn_parameter_counts_match_the_reference_measurements(conv, params):
    spec = ArchitectureSpec(ModelName.simplecnn, FASHION, conv, 3)
    assert summarize(build(spec), FASHION).parameters == params


@pytest.mark.parametrize("shape", [FASHION, CIFAR])
@pytest.mark.parametrize("linear", [1, 3, 7])
def test_every_valid_layer_count_gives_ten_logits(shape, linear):
    for conv in range(1, max_conv_layers(shape[1], shape[2]) + 1):
        net = build(ArchitectureSpec(ModelName.simplecnn, shape, conv, linear))
        assert net(torch.zeros(5, *shape)).shape == (5, 10)
        assert sum(isinstance(m, nn.Conv2d) for m in net) == conv
        assert sum(isinstance(m, nn.Linear) for m in net) == linear
    for model in (ModelName.densepoly, ModelName.denselinear):
        assert build(ArchitectureSpec(model, shape, 0, linear))(torch.zeros(2, *shape)).shape == (2, 10)


def test_conv_blocks_follow_the_paper():
    net = build(ArchitectureSpec(ModelName.simplecnn, CIFAR, 2, 3))
    convs = [m for m in net if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding) for c in convs] == [
        (3, 9, (3, 3), (1, 1), (1, 1)),
        (9, 27, (3, 3), (1, 1), (1, 1)),
    ]
    kinds = [type(m).__name__ for m in net]
    assert kinds[:4] == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"]
    assert "ReLU" not in kinds[kinds.index("Flatten") :], "no activation follows the linear layers"


def test_relu_off_removes_only_the_relus():
    on = summarize(build(ArchitectureSpec(ModelName.simplecnn, FASHION, 3, 3, relu=True)), FASHION)
    off = summarize(build(ArchitectureSpec(ModelName.simplecnn, FASHION, 3, 3, relu=False)), FASHION)
    assert on.layer_counts["relu"] == 3 and "relu" not in off.layer_counts
    assert on.parameters == off.parameters


def test_summary_counts_multiply_accumulates():
    # densepoly on 28x28: 784*392 + 392*196 + 196*10
    summary = summarize(build(ArchitectureSpec(ModelName.densepoly, FASHION, 0, 3)), FASHION)
    assert summary.macs_per_sample == 784 * 392 + 392 * 196 + 196 * 10
    assert summary.layer_counts == {"flatten": 1, "linear": 3}


@pytest.mark.parametrize(
    ("shape", "conv", "allowed"),
    [(FASHION, 5, "1 to 4"), (CIFAR, 6, "1 to 5"), (FASHION, 0, "1 to 4"), (CIFAR, -1, "1 to 5")],
)
def test_impossible_conv_counts_are_config_errors(shape, conv, allowed):
    with pytest.raises(ConfigError, match=f"conv_layers={conv}: .*{allowed}"):
        build(ArchitectureSpec(ModelName.simplecnn, shape, conv, 3))


@pytest.mark.parametrize(
    ("model", "linear"), [(ModelName.densepoly, 0), (ModelName.densepoly, 11), (ModelName.simplecnn, -2)]
)
def test_impossible_linear_counts_are_config_errors(model, linear):
    conv = 2 if model is ModelName.simplecnn else 0
    with pytest.raises(ConfigError, match=f"linear_layers={linear}"):
        build(ArchitectureSpec(model, FASHION, conv, linear))


# ---------------------------------------------------------------- any model

TINY_NET = '''
from torch import nn


class Net(nn.Sequential):
    """A user's model: greenai passes num_classes and in_channels, model.args the rest."""

    def __init__(self, num_classes, in_channels, width=4):
        super().__init__(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.GELU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
            nn.Linear(4 * width, num_classes),
        )


class Wrong(nn.Module):
    def __init__(self):
        super().__init__()
        self.out = nn.Linear(784, 7)

    def forward(self, x):
        return self.out(x.flatten(1))
'''


def torchvision_spec(arch: str, shape=FASHION, classes: int = 10, **args) -> ArchitectureSpec:
    import json

    pairs = tuple((k, json.dumps(v)) for k, v in sorted(args.items()))
    return ArchitectureSpec(ModelName.torchvision, shape, 0, 0, classes=classes, arch=arch, args=pairs)


def custom_spec(target: str, trusted=(), classes: int = 10, **args) -> ArchitectureSpec:
    import json

    pairs = tuple((k, json.dumps(v)) for k, v in sorted(args.items()))
    return ArchitectureSpec(
        ModelName.custom, FASHION, 0, 0, classes=classes, target=target, args=pairs, trusted=trusted
    )


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """`mynets.py` in the working folder, as a user would keep it."""
    (tmp_path / "mynets.py").write_text(TINY_NET)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "mynets"
    import sys

    sys.modules.pop("mynets", None)


def test_a_torchvision_model_takes_the_datasets_channels_and_classes():
    from greenai.training.models import check_architecture

    spec = torchvision_spec("resnet18", classes=7)
    check_architecture(spec)
    net = build(spec)
    assert net.conv1.in_channels == 1 and net.fc.out_features == 7
    assert net(torch.zeros(2, *FASHION)).shape == (2, 7)
    assert spec.name == "resnet18"


def test_a_vision_transformer_is_told_the_image_size():
    net = build(torchvision_spec("vit_b_16", shape=CIFAR))
    assert net.image_size == 32 and net(torch.zeros(2, *CIFAR)).shape == (2, 10)


def test_an_unknown_torchvision_model_names_the_closest():
    with pytest.raises(ConfigError, match=r"^model.arch=resnet19: not a torchvision classification model; closest: "):
        build(torchvision_spec("resnet19"))
    with pytest.raises(ConfigError, match="closest: .*mobilenet_v3_small"):
        build(torchvision_spec("mobilenet_v3_smal"))


def test_a_model_whose_output_is_not_logits_is_refused():
    from greenai.training.models import check_architecture

    # GoogLeNet trains with auxiliary outputs: a named tuple, not logits.
    with pytest.raises(ConfigError, match=r"^model.arch=googlenet: gives GoogLeNetOutputs for a batch of 2 1x28x28"):
        check_architecture(torchvision_spec("googlenet"))
    check_architecture(torchvision_spec("googlenet", aux_logits=False, init_weights=False))


def test_a_users_module_from_the_working_folder(user_module):
    from greenai.training.models import check_architecture

    spec = custom_spec("mynets.Net", trusted=("mynets.*",), classes=5, width=6)
    check_architecture(spec)
    net = build(spec)
    assert net[0].out_channels == 6 and net(torch.zeros(3, *FASHION)).shape == (3, 5)
    assert spec.name == "net-width6"


@pytest.mark.parametrize(
    ("target", "trusted", "message"),
    [
        ("mynets.Net", (), r"^model._target_=mynets.Net: not on the allow-list .* trusted_targets=\[mynets.\*\]"),
        ("nosuch.nets.Net", ("nosuch.*",), r"^model._target_=nosuch.nets.Net: cannot be imported \(.*'nosuch'"),
        ("mynets.Nett", ("mynets.*",), r"^model._target_=mynets.Nett: cannot be imported: mynets has no 'Nett'"),
        ("mynets.Wrong", ("mynets.Wrong",), r"^model._target_=mynets.Wrong: gives \(2, 7\) for a batch .* \(2, 10\)"),
    ],
)
def test_a_users_module_is_refused_in_one_line(user_module, target, trusted, message):
    from greenai.training.models import check_architecture

    with pytest.raises(ConfigError, match=message) as info:
        check_architecture(custom_spec(target, trusted))
    assert "\n" not in str(info.value)


def test_arguments_a_users_class_does_not_take_are_refused(user_module):
    with pytest.raises(
        ConfigError, match=r"^model.args=\{'depth': 3\}: mynets.Net cannot be built with them: TypeError"
    ):
        build(custom_spec("mynets.Net", ("mynets.*",), depth=3))


def test_summary_counts_layers_by_kind_for_any_model():
    resnet = summarize(build(torchvision_spec("resnet18")), FASHION)
    assert resnet.kinds == {"conv": 20, "norm": 20, "linear": 1, "activation": 9, "attention": 0}
    assert resnet.as_dict()["conv_layers"] == 20 and resnet.as_dict()["n_conv2d"] == 20
    kinds = summarize(RowAttention(), FASHION).kinds
    assert kinds["attention"] == 1 and kinds["linear"] == 1  # the attention's output projection


class RowAttention(nn.Module):
    """Self-attention over an image's rows."""

    def __init__(self) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(28, 4, batch_first=True)

    def forward(self, x):
        rows = x[:, 0]
        return self.attention(rows, rows, rows)[0]


def test_macs_come_from_torchs_flop_counter_and_match_the_papers_formula():
    # SimpleCNN, one conv block on 28x28: 3 x 28 x 28 outputs of a 1-channel 3x3 kernel, then
    # max-pooled to 3 x 14 x 14 and one Linear to 10 classes.
    net = build(ArchitectureSpec(ModelName.simplecnn, FASHION, 1, 1))
    assert summarize(net, FASHION).macs_per_sample == 3 * 28 * 28 * 1 * 9 + 3 * 14 * 14 * 10
