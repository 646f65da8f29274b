"""Training-time augmentation on the training device, for a whole batch at once: no per-image
work on the CPU, and no transfer of more than the original images.

`dataset.augment=crop_flip`: each image is padded by an eighth of its size (4 pixels for 32x32,
3 for 28x28), cropped back to its size at a random offset, and flipped horizontally with
probability one half, as torchvision's RandomCrop(padding) and RandomHorizontalFlip do. The images
are normalised already, so the padding is the training split's mean, not black. The draws come
from a generator on the device seeded with the training's seed: a repeat or a trial with the same
seed sees the same crops, and the batch order (drawn from its own generator) is the same with or
without augmentation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F

from greenai.config import Augment

Augmentation = Callable[[torch.Tensor], torch.Tensor]


class CropFlip:
    def __init__(self, seed: int, device: torch.device) -> None:
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        b, c, h, w = images.shape
        pad = max(1, min(h, w) // 8)
        padded = F.pad(images, (pad, pad, pad, pad))
        device = images.device
        dy = torch.randint(0, 2 * pad + 1, (b, 1), generator=self.generator, device=device)
        dx = torch.randint(0, 2 * pad + 1, (b, 1), generator=self.generator, device=device)
        rows = (dy + torch.arange(h, device=device))[:, None, :, None]  # b x 1 x h x 1
        cols = (dx + torch.arange(w, device=device))[:, None, None, :]  # b x 1 x 1 x w
        batch = torch.arange(b, device=device)[:, None, None, None]
        channel = torch.arange(c, device=device)[None, :, None, None]
        cropped = padded[batch, channel, rows, cols]
        flip = torch.rand(b, generator=self.generator, device=device) < 0.5
        return torch.where(flip[:, None, None, None], cropped.flip(3), cropped)


def augmentation(kind: Augment, seed: int, device: torch.device) -> Augmentation | None:
    """The augmentation of one training (None: the images as they are)."""
    return CropFlip(seed, device) if kind is Augment.crop_flip else None
