"""The example's Lightning side: the blobs as a LightningDataModule and the MLP as a
LightningModule, as lightning-hydra-template keeps them in src/data and src/models."""

from __future__ import annotations

import lightning
import torch
from blobs import MLP, make_data
from torch.utils.data import DataLoader, TensorDataset


class BlobsDataModule(lightning.LightningDataModule):
    def __init__(
        self, train_size: int, test_size: int, features: int, classes: int, seed: int, batch_size: int
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.train_set: TensorDataset | None = None
        self.val_set: TensorDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        h = self.hparams
        train, val = make_data(h.train_size, h.test_size, h.features, h.classes, h.seed)
        self.train_set, self.val_set = TensorDataset(*train), TensorDataset(*val)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.hparams.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=1024)


class BlobsClassifier(lightning.LightningModule):
    def __init__(self, features: int, hidden: int, classes: int, lr: float) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = MLP(features, hidden, classes)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], index: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self.net(x), y)
        self.log("train/loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], index: int) -> None:
        x, y = batch
        self.log("val/acc", (self.net(x).argmax(dim=1) == y).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
