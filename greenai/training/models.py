"""The models a trial trains, and their summary (parameters, MACs, layers by kind).

The paper's three (docs/configuration.md, "The models"), sized from the dataset's image shape:
DensePolyNN: Flatten, N-1 Linear layers of width floor(D / 2^(d+1)), then Linear(-> classes).
DenseLinearNN: the same with widths floor(D - (d+1) * D / N).
SimpleCNN: M blocks [Conv2d(out = C * 3^(d+1), k3, s1, p1), BatchNorm2d, ReLU, MaxPool2d(2)],
then the DensePolyNN stack on the flattened feature map. No activation after linear layers.

Beyond them: any classification builder of torchvision.models (`model=torchvision
model.arch=resnet18`), and a user's nn.Module (`model=custom model._target_=mypkg.nets.Net`),
instantiated by Hydra with an allow-list (`trusted_targets`). Both are checked before any run by
one forward pass: the output must be (batch, classes) logits.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import json
import os
import sys
from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch
import torchvision.models as tv_models
from hydra.utils import instantiate
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from greenai.config import TRUSTED_TARGETS, ModelName, TrainConfig
from greenai.errors import ConfigError, failure_reason

CLASSES = 10


@dataclass(frozen=True)
class ArchitectureSpec:
    model: ModelName
    input_shape: tuple[int, int, int]  # C, H, W
    conv_layers: int
    linear_layers: int
    relu: bool = True
    classes: int = CLASSES
    # model=torchvision: the builder's name; model=custom: the class's import path.
    arch: str | None = None
    target: str | None = None
    # Keyword arguments as (key, JSON text) pairs: hashable, so a spec keys caches and fusion.
    args: tuple[tuple[str, str], ...] = ()
    # Import paths the config trusts besides TRUSTED_TARGETS (`trusted_targets`).
    trusted: tuple[str, ...] = ()

    @classmethod
    def from_config(
        cls, cfg: TrainConfig, input_shape: tuple[int, int, int] | None = None, classes: int | None = None
    ) -> ArchitectureSpec:
        """`input_shape` and `classes`: the dataset's, where its config does not give them."""
        ds = cfg.dataset
        shape = input_shape or (ds.channels, ds.height, ds.width)
        if None in shape:
            raise ValueError("the dataset's image shape is not known yet: pass input_shape (data.describe)")
        count = classes or ds.classes or CLASSES
        if not cfg.model.name.is_paper:
            return cls(
                model=cfg.model.name,
                input_shape=shape,  # type: ignore[arg-type]
                conv_layers=0,
                linear_layers=0,
                classes=count,
                arch=cfg.model.arch,
                target=cfg.model._target_,
                args=tuple((k, json.dumps(v, sort_keys=True)) for k, v in sorted(cfg.model.args.items())),
                trusted=tuple(cfg.trusted_targets),
            )
        simplecnn = cfg.model.name is ModelName.simplecnn
        return cls(
            model=cfg.model.name,
            input_shape=shape,  # type: ignore[arg-type]
            # Only SimpleCNN has conv blocks; the dense models ignore `conv_layers`.
            conv_layers=cfg.conv_layers if simplecnn else 0,
            linear_layers=cfg.linear_layers,
            relu=cfg.relu,
            classes=count,
        )

    @property
    def kwargs(self) -> dict[str, Any]:
        return {key: json.loads(value) for key, value in self.args}

    @property
    def name(self) -> str:
        """Short, readable architecture name, e.g. `simplecnn-conv2-lin3-relu`, `resnet18`,
        `net-width64` (a custom class with its arguments)."""
        if not self.model.is_paper:
            base = self.arch if self.arch else str(self.target).rsplit(".", 1)[-1].lower()
            return "-".join([base, *(f"{k}{v}" for k, v in self.args if len(v) <= 12)])
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
    """Refuse, before any run: layer counts the input cannot take (the paper's models), or a
    model that cannot be built or does not give `classes` logits for a batch of the images."""
    if not spec.model.is_paper:
        _check_built(spec)
        return
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


def build(spec: ArchitectureSpec) -> nn.Module:
    """The network for `spec` (an nn.Sequential for the paper's models); raises ConfigError for
    impossible layer counts, an unknown builder, or a class that cannot be imported or is not
    on the allow-list."""
    if spec.model is ModelName.torchvision:
        return _torchvision_model(spec)
    if spec.model is ModelName.custom:
        return _custom_model(spec)
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


# ---------------------------------------------------------------- torchvision's models

# Builders that size their positional embeddings from the image: told the dataset's size.
IMAGE_SIZE_ARGUMENT = {"vit_": "image_size", "maxvit_": "input_size"}


def classification_models() -> list[str]:
    """torchvision's classification builders (not detection, segmentation, video, ...)."""
    return tv_models.list_models(module=tv_models)


def _torchvision_model(spec: ArchitectureSpec) -> nn.Module:
    """torchvision's builder with weights=None (nothing downloaded) and the dataset's classes,
    adapted to the images: the first convolution takes their channels (a fresh Conv2d with the
    same kernel, stride and padding, where they are not 3), and ViT-like builders their size."""
    known = classification_models()
    if spec.arch not in known:
        close = difflib.get_close_matches(str(spec.arch), known, n=3, cutoff=0.5)
        hint = (
            f"closest: {', '.join(close)}" if close else "see torchvision.models.list_models(module=torchvision.models)"
        )
        raise ConfigError("model.arch", spec.arch, f"not a torchvision classification model; {hint}")
    kwargs: dict[str, Any] = {"weights": None, "num_classes": spec.classes, **spec.kwargs}
    _, h, w = spec.input_shape
    for prefix, key in IMAGE_SIZE_ARGUMENT.items():
        if str(spec.arch).startswith(prefix) and key not in kwargs:
            kwargs[key] = h if key == "image_size" else (h, w)
    try:
        model = tv_models.get_model(str(spec.arch), **kwargs)
    except Exception as exc:  # a builder refusing its arguments raises many kinds of errors
        raise ConfigError("model.arch", spec.arch, f"torchvision cannot build it so: {failure_reason(exc)}") from exc
    _take_channels(model, spec.input_shape[0])
    return model


def _take_channels(model: nn.Module, channels: int) -> None:
    """Give the first convolution `channels` input channels (1 for grey images)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            if module.in_channels != channels and module.groups == 1:
                parent_name, _, attribute = name.rpartition(".")
                replacement = nn.Conv2d(
                    channels,
                    module.out_channels,
                    module.kernel_size,  # type: ignore[arg-type]
                    module.stride,  # type: ignore[arg-type]
                    module.padding,  # type: ignore[arg-type]
                    module.dilation,  # type: ignore[arg-type]
                    bias=module.bias is not None,
                    padding_mode=module.padding_mode,
                )
                setattr(model.get_submodule(parent_name), attribute, replacement)
            return


# ---------------------------------------------------------------- a user's module


def trusted(target: str, extra: tuple[str, ...] | list[str]) -> bool:
    """Whether `target` is on the allow-list: an exact path, or under a `package.*` entry (as
    Hydra's execution whitelist reads them)."""
    for pattern in (*TRUSTED_TARGETS, *extra):
        if pattern.endswith(".*") and target.startswith(pattern[:-1]) or target == pattern:
            return True
    return False


def check_trusted(key: str, target: str, extra: tuple[str, ...] | list[str]) -> None:
    """Refuse a target off the allow-list before anything imports it (importing runs its code)."""
    if not trusted(target, extra):
        package = target.split(".", 1)[0]
        raise ConfigError(
            key,
            target,
            f"not on the allow-list of classes a config may instantiate; trust it with "
            f"trusted_targets=[{package}.*] (on the command line or in a config file)",
        )


def locate(key: str, target: str) -> Any:
    """The object at import path `target`, from the working folder or an installed package."""
    if os.getcwd() not in sys.path:  # `greenai-train` (unlike python -m) leaves it out
        sys.path.append(os.getcwd())
    module_name, found, missing = target, None, ""
    while module_name:
        try:
            found = importlib.import_module(module_name)
            break
        except ModuleNotFoundError as exc:
            if exc.name is None or not module_name.startswith(exc.name):  # the module's own import
                raise ConfigError(key, target, f"cannot be imported: {failure_reason(exc)}") from exc
            missing = missing or failure_reason(exc)
            module_name = module_name.rpartition(".")[0]
        except Exception as exc:  # the user's module itself fails: SyntaxError, ImportError, ...
            raise ConfigError(key, target, f"cannot be imported: {failure_reason(exc)}") from exc
    if found is None:
        raise ConfigError(
            key, target, f"cannot be imported ({missing}): not in the working folder nor an installed package"
        )
    for attribute in target.removeprefix(module_name).lstrip(".").split(".") if module_name != target else []:
        if not hasattr(found, attribute):
            raise ConfigError(key, target, f"cannot be imported: {module_name} has no {attribute!r}")
        found = getattr(found, attribute)
    return found


# Given to a custom class whose constructor names them.
def _offered(spec: ArchitectureSpec) -> dict[str, Any]:
    c, h, w = spec.input_shape
    return {"num_classes": spec.classes, "in_channels": c, "input_shape": [c, h, w]}


def _custom_model(spec: ArchitectureSpec) -> nn.Module:
    target = str(spec.target)
    check_trusted("model._target_", target, spec.trusted)
    cls = locate("model._target_", target)
    try:
        accepted = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        accepted = {}  # type: ignore[assignment]
    kwargs = {k: v for k, v in _offered(spec).items() if k in accepted}
    kwargs.update(spec.kwargs)
    try:
        model = instantiate(
            {"_target_": target, **kwargs}, _convert_="all", _execution_whitelist_=[*TRUSTED_TARGETS, *spec.trusted]
        )
    except Exception as exc:  # Hydra wraps the constructor's error: its cause tells what went wrong
        why = failure_reason(exc.__cause__ or exc)
        raise ConfigError("model.args", dict(spec.kwargs), f"{target} cannot be built with them: {why}") from exc
    if not isinstance(model, nn.Module):
        raise ConfigError("model._target_", target, f"gives a {type(model).__name__}, not a torch.nn.Module")
    return model


def _key_and_value(spec: ArchitectureSpec) -> tuple[str, object]:
    return ("model.arch", spec.arch) if spec.model is ModelName.torchvision else ("model._target_", spec.target)


@functools.cache
def _check_built(spec: ArchitectureSpec) -> None:
    """One forward pass of a batch of two of the dataset's images (zeros of their shape), in
    training mode as the loop runs it: the output must be (2, classes) logits. Once per spec."""
    key, value = _key_and_value(spec)
    model = build(spec)
    c, h, w = spec.input_shape
    try:
        with torch.no_grad():
            out = model.train()(torch.zeros(2, c, h, w))
    except Exception as exc:  # a model that cannot take these images fails in many ways
        raise ConfigError(key, value, f"fails on a batch of {c}x{h}x{w} images: {failure_reason(exc)}") from exc
    got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if got != (2, spec.classes):
        raise ConfigError(
            key,
            value,
            f"gives {got} for a batch of 2 {c}x{h}x{w} images; the dataset needs (2, {spec.classes}) logits",
        )


# ---------------------------------------------------------------- summary

# Layers by kind, for a layer study over any family of models. Attention blocks are counted
# whole (nn.MultiheadAttention, and blocks named *Attention, as torchvision's Swin and MaxViT),
# the innermost only: a user's SelfAttention around an nn.MultiheadAttention is one.
NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm, nn.RMSNorm)


def _is_attention(module: nn.Module) -> bool:
    return isinstance(module, nn.MultiheadAttention) or type(module).__name__.endswith("Attention")


def layer_kind(module: nn.Module) -> str | None:
    if _is_attention(module):
        inner = any(_is_attention(m) for m in module.modules() if m is not module)
        return None if inner else "attention"
    if isinstance(module, nn.modules.conv._ConvNd):
        return "conv"
    if isinstance(module, (nn.Linear, nn.Bilinear)):
        return "linear"
    if isinstance(module, NORMS):
        return "norm"
    if type(module).__module__ == "torch.nn.modules.activation":
        return "activation"
    return None


@dataclass(frozen=True)
class ArchitectureSummary:
    parameters: int
    macs_per_sample: int
    layer_counts: dict[str, int]  # leaf modules by class name, lowercased
    kinds: dict[str, int] | None = None  # conv, linear, activation, norm, attention

    def as_dict(self) -> dict[str, int]:
        flat = {"params": self.parameters, "macs_per_sample": self.macs_per_sample}
        flat.update({f"n_{kind}": count for kind, count in sorted(self.layer_counts.items())})
        flat.update({f"{kind}_layers": count for kind, count in sorted((self.kinds or {}).items())})
        return flat


def summarize(model: nn.Module, input_shape: tuple[int, int, int]) -> ArchitectureSummary:
    """Parameter count, multiply-accumulates per sample (torch's FlopCounterMode on one image,
    in evaluation mode: half its FLOPs, as it counts a multiply-add as two), layers by class and
    by kind."""
    was_training = model.training
    device = next(model.parameters(), torch.zeros(0)).device  # a model without weights: the CPU
    try:
        model.eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        model.train(was_training)
    leaves = [m for m in model.modules() if not list(m.children())]
    classes = Counter(type(m).__name__.lower() for m in leaves)
    kinds = Counter(kind for m in model.modules() if (kind := layer_kind(m)) is not None)
    kinds.update({kind: 0 for kind in ("conv", "linear", "activation", "norm", "attention") if kind not in kinds})
    params = sum(p.numel() for p in model.parameters())
    return ArchitectureSummary(params, counter.get_total_flops() // 2, dict(classes), dict(kinds))
