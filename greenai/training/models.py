"""The paper's three models (docs/configuration.md, "The models"), sized from the dataset's image
shape, and their summary.

DensePolyNN: Flatten, N-1 Linear layers of width floor(D / 2^(d+1)), then Linear(-> classes).
DenseLinearNN: the same with widths floor(D - (d+1) * D / N).
SimpleCNN: M blocks [Conv2d(out = C * 3^(d+1), k3, s1, p1), BatchNorm2d, ReLU, MaxPool2d(2)],
then the DensePolyNN stack on the flattened feature map. No activation after linear layers.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch
from torch import nn

from greenai.config import ModelName, TrainConfig
from greenai.errors import ConfigError

CLASSES = 10


@dataclass(frozen=True)
class ArchitectureSpec:
    model: ModelName
    input_shape: tuple[int, int, int]  # C, H, W
    conv_layers: int
    linear_layers: int
    relu: bool = True
    classes: int = CLASSES

    @classmethod
    def from_config(cls, cfg: TrainConfig) -> ArchitectureSpec:
        ds = cfg.dataset
        simplecnn = cfg.model.name is ModelName.simplecnn
        return cls(
            model=cfg.model.name,
            input_shape=(ds.channels, ds.height, ds.width),
            # Only SimpleCNN has conv blocks; the dense models ignore `conv_layers`.
            conv_layers=cfg.conv_layers if simplecnn else 0,
            linear_layers=cfg.linear_layers,
            relu=cfg.relu,
        )

    @property
    def name(self) -> str:
        """Short, readable architecture name, e.g. `simplecnn-conv2-lin3-relu`."""
        parts = [self.model.value]
        if self.model is ModelName.simplecnn:
            parts += [f"conv{self.conv_layers}"]
        parts += [f"lin{self.linear_layers}"]
        if self.model is ModelName.simplecnn:
            parts += ["relu" if self.relu else "norelu"]
        return "-".join(parts)


def max_conv_layers(height: int, width: int) -> int:
    """Conv blocks an image takes: each block's MaxPool2d(2) halves H and W, rounding down."""
    blocks, size = 0, min(height, width)
    while size >= 2:
        size //= 2
        blocks += 1
    return blocks


def conv_channels(in_channels: int, block: int) -> int:
    return in_channels * 3 ** (block + 1)


def feature_shape(spec: ArchitectureSpec) -> tuple[int, int, int]:
    """Shape after the conv blocks (the input shape when there are none)."""
    c0, h, w = spec.input_shape
    c = c0
    for block in range(spec.conv_layers):
        c, h, w = conv_channels(c0, block), h // 2, w // 2
    return c, h, w


def hidden_widths(model: ModelName, d: int, linear_layers: int) -> list[int]:
    """Widths of the N-1 hidden linear layers for an input of flattened size D."""
    n = linear_layers
    if model is ModelName.denselinear:
        # floor(D - (d+1) * D / N), in integers so no float rounding creeps in.
        return [d * (n - i - 1) // n for i in range(n - 1)]
    return [d // 2 ** (i + 1) for i in range(n - 1)]


def max_linear_layers(model: ModelName, d: int) -> int:
    """Largest N whose every hidden width is at least 1."""
    if model is ModelName.denselinear:
        return d  # last hidden width floor(D / N) >= 1
    n = 1
    while d // 2**n >= 1:
        n += 1
    return n


def check_architecture(spec: ArchitectureSpec) -> None:
    """Refuse layer counts the input cannot take, before any data is read."""
    _, h, w = spec.input_shape
    size = f"{h}x{w}"
    if spec.model is ModelName.simplecnn:
        most = max_conv_layers(h, w)
        if not 1 <= spec.conv_layers <= most:
            raise ConfigError("conv_layers", spec.conv_layers, f"simplecnn on {size} images takes 1 to {most}")
    c, fh, fw = feature_shape(spec)
    most = max_linear_layers(spec.model, c * fh * fw)
    if not 1 <= spec.linear_layers <= most:
        raise ConfigError(
            "linear_layers",
            spec.linear_layers,
            f"{spec.model.value} with {spec.conv_layers} conv layers on {size} images takes 1 to {most}",
        )


def _conv_block(in_channels: int, out_channels: int, relu: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1),
        nn.BatchNorm2d(out_channels),
    ]
    if relu:
        layers.append(nn.ReLU())
    layers.append(nn.MaxPool2d(2))
    return layers


def _linear_stack(model: ModelName, d: int, linear_layers: int, classes: int) -> list[nn.Module]:
    widths = hidden_widths(model, d, linear_layers)
    sizes = [d, *widths, classes]
    return [nn.Linear(a, b) for a, b in zip(sizes, sizes[1:], strict=False)]


def build(spec: ArchitectureSpec) -> nn.Sequential:
    """The network for `spec`; raises ConfigError for impossible layer counts."""
    check_architecture(spec)
    layers: list[nn.Module] = []
    c0 = in_c = spec.input_shape[0]
    for block in range(spec.conv_layers):
        out_c = conv_channels(c0, block)
        layers += _conv_block(in_c, out_c, spec.relu)
        in_c = out_c
    c, h, w = feature_shape(spec)
    layers.append(nn.Flatten())
    # SimpleCNN's linear stack is DensePolyNN's, on the flattened feature map.
    stack_kind = ModelName.densepoly if spec.model is ModelName.simplecnn else spec.model
    layers += _linear_stack(stack_kind, c * h * w, spec.linear_layers, spec.classes)
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class ArchitectureSummary:
    parameters: int
    macs_per_sample: int
    layer_counts: dict[str, int]

    def as_dict(self) -> dict[str, int]:
        flat = {"params": self.parameters, "macs_per_sample": self.macs_per_sample}
        flat.update({f"n_{kind}": count for kind, count in sorted(self.layer_counts.items())})
        return flat


def summarize(model: nn.Module, input_shape: tuple[int, int, int]) -> ArchitectureSummary:
    """Parameter count, multiply-accumulates per sample (conv and linear), layers by type."""
    macs = 0

    def count(module: nn.Module, _inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            macs += output[0].numel() * (module.in_channels // module.groups) * k
        elif isinstance(module, nn.Linear):
            macs += module.in_features * module.out_features

    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(count) for m in leaves]
    was_training = model.training
    try:
        model.eval()
        device = next(model.parameters()).device
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    kinds = Counter(type(m).__name__.lower() for m in leaves)
    params = sum(p.numel() for p in model.parameters())
    return ArchitectureSummary(parameters=params, macs_per_sample=macs, layer_counts=dict(kinds))
