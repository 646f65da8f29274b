"""The example's Lightning app, in lightning-hydra-template's style: everything is instantiated
from the config, and greenai is one entry under `callbacks:` (conf/callbacks/default.yaml).

    python lightning_app.py                                  # one fit
    python lightning_app.py -m model.hidden=16,64            # a plain sweep: one run per fit
    python lightning_app.py -m greenai/searcher=tpe 'model.lr=interval(0.01,0.3)' hydra.sweeper.n_trials=8
"""

from __future__ import annotations

import hydra
import lightning
from omegaconf import DictConfig

import greenai


@hydra.main(
    config_path="conf", config_name="lightning", execution_whitelist=(*greenai.TRUSTED_TARGETS, "lightning.*", "lit.*")
)
def main(cfg: DictConfig) -> float:
    lightning.seed_everything(cfg.seed)
    datamodule = hydra.utils.instantiate(cfg.data)
    model = hydra.utils.instantiate(cfg.model)
    callbacks = [hydra.utils.instantiate(callback) for callback in cfg.callbacks.values()]
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks)
    trainer.fit(model, datamodule=datamodule)
    # As the template does: the metric the sweeper optimises. A pruned trial's job has told the
    # study it was pruned already.
    return float(trainer.callback_metrics[cfg.optimized_metric])


if __name__ == "__main__":
    with greenai.command_line_errors():  # a bad command line or config: one line, exit status 2
        main()
