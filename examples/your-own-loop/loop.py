"""A training loop of the example's own, measured and tracked by greenai through its public API.

    python loop.py                                  # one run
    python loop.py -m greenai/searcher=tpe 'lr=interval(0.01,0.3)' hydra.sweeper.n_trials=8

Each run is one MLflow run with the config as params and, per epoch, the loop's metrics and
the epoch's energy (epoch_energy_j); a sweep's runs hang under its parent run.
"""

from __future__ import annotations

import hydra
import torch
from blobs import MLP, accuracy, make_data, train_epoch
from omegaconf import DictConfig

import greenai


@hydra.main(config_path="conf", config_name="loop", execution_whitelist=greenai.TRUSTED_TARGETS)
def main(cfg: DictConfig) -> object:
    torch.manual_seed(cfg.seed)
    with greenai.Trial(cfg) as trial:
        (x_train, y_train), (x_test, y_test) = (
            tuple(t.to(trial.device) for t in split) for split in make_data(**cfg.data)
        )
        model = MLP(cfg.data.features, cfg.model.hidden, cfg.data.classes).to(trial.device)
        optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr)
        for _ in range(cfg.epochs):
            with trial.epoch():  # the epoch's training: one energy window
                loss = train_epoch(model, optimizer, x_train, y_train, cfg.batch_size)
                with trial.evaluation():  # its evaluation: a window of its own
                    test_accuracy = accuracy(model, x_test, y_test)
                trial.report(train_loss=loss, test_accuracy=test_accuracy)
            if trial.should_prune:  # greenai's sweeper's pruner stops a trial going nowhere
                break
    return trial.objective  # what greenai's sweeper optimises (greenai.metric: test_accuracy)


if __name__ == "__main__":
    with greenai.command_line_errors():  # a bad command line or config: one line, exit status 2
        main()
