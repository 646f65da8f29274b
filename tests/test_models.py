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
