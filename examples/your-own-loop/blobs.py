"""The example's own data and model: Gaussian blobs, one per class, drawn from a seed (nothing
to download), and a small multilayer perceptron that learns to tell them apart."""

from __future__ import annotations

import torch
from torch import nn


def make_data(
    train_size: int, test_size: int, features: int, classes: int, seed: int
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """(x_train, y_train), (x_test, y_test): each class a blob around its own centre, the blobs
    overlapping enough that accuracy grows over epochs and depends on the learning rate."""
    generator = torch.Generator().manual_seed(seed)
    centres = 0.35 * torch.randn(classes, features, generator=generator)

    def draw(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(count) % classes
        return centres[labels] + torch.randn(count, features, generator=generator), labels

    return draw(train_size), draw(test_size)


class MLP(nn.Module):
    def __init__(self, features: int, hidden: int, classes: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def train_epoch(
    model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, batch: int
) -> float:
    """One pass over the training set in shuffled batches; the mean training loss."""
    model.train()
    losses = []
    for index in torch.randperm(len(x)).split(batch):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x[index]), y[index])
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return sum(losses) / len(losses)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return (model(x).argmax(dim=1) == y).float().mean().item()
