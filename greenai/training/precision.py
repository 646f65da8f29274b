"""Mixed precision (`precision=fp32|bf16|fp16`): forward passes and losses under torch.autocast
to bfloat16 or float16, and for float16 a GradScaler, which scales the loss so that small
gradients do not underflow (bfloat16 has float32's range and needs none). Weights and optimiser
state stay float32. What the run records is read back from the live autocast and scaler."""

from __future__ import annotations

import contextlib

import torch

from greenai.config import Precision
from greenai.errors import ConfigError

DTYPES = {Precision.bf16: torch.bfloat16, Precision.fp16: torch.float16}


def bf16_supported(device: torch.device) -> bool:
    """Whether `device` runs bfloat16 natively: CUDA GPUs from Ampere on; CPUs (torch's CPU
    autocast supports it everywhere)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    return torch.amp.is_autocast_available(device.type)


def check_precision(precision: Precision, device: torch.device, name: str) -> None:
    """Refuse, before any run, a precision the device cannot train in."""
    if precision is Precision.fp32:
        return
    if not torch.amp.is_autocast_available(device.type):
        raise ConfigError("precision", precision.value, f"torch has no autocast for {name}; use precision=fp32")
    if precision is Precision.bf16 and not bf16_supported(device):
        raise ConfigError(
            "precision", "bf16", f"{name} has no bfloat16 (GPUs have it from Ampere on); use precision=fp16 or fp32"
        )


class Amp:
    """One training's precision: `autocast()` around forward passes, `backward_step` for the step."""

    def __init__(self, precision: Precision, device: torch.device) -> None:
        self.precision, self.device_type = precision, device.type
        self.dtype = DTYPES.get(precision)
        self.scaler = torch.amp.GradScaler(device.type) if precision is Precision.fp16 else None

    def autocast(self) -> contextlib.AbstractContextManager[object]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            loss.backward()
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)  # skipped where the scaled gradients overflowed
        self.scaler.update()

    def params(self) -> dict[str, object]:
        """Autocast and scaler as they are when training runs, for the run's params."""
        with self.autocast():
            enabled = torch.is_autocast_enabled(self.device_type)
            dtype = torch.get_autocast_dtype(self.device_type) if enabled else torch.float32
        found: dict[str, object] = {"precision.autocast": enabled, "precision.compute_dtype": str(dtype).split(".")[-1]}
        found["precision.grad_scaler"] = bool(self.scaler is not None and self.scaler.is_enabled())
        if self.scaler is not None:
            found["precision.initial_loss_scale"] = float(self.scaler.get_scale())
        return found
