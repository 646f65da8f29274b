"""Several trials at once on one GPU (`hydra/launcher=packed sweep.trials_per_gpu=K`), and whose
energy is whose.

Small models leave a modern GPU mostly idle, and its idle power dominates their energy; K trials
in K worker processes on the same GPU share it. Each trial's own Zeus windows would then count
the other trials' work too, so a packed trial measures nothing by itself: its `TimelineMeter`
reads the GPU's (and RAPL's) cumulative counters at each of its window boundaries and writes
them to the sweep folder. When the batch ends, the sweeper merges every worker's readings with
its own at the batch's ends and splits each interval's energy equally among the trials active
in it (`greenai.energy.attribution`); time with no trial active is the batch's overhead, charged to
nobody. Every energy figure of a packed trial — per epoch and final, gross and net — comes
from that rule, labelled `energy_source=attributed`, and the study is told the attributed
energy. With the CPU estimate (no counters) each process is counted apart and nothing needs
attributing.
"""

from __future__ import annotations

import logging
import math
import socket
from collections.abc import Hashable
from typing import Any

import optuna
import torch
from omegaconf import DictConfig

from greenai import names
from greenai.energy.attribution import Window, attribute
from greenai.energy.counters import Reading, ZeusCounters, by_component
from greenai.energy.idle import IdlePower
from greenai.energy.ledger import TRIAL, Entry, joules_of
from greenai.energy.meters import Measurement, Source, gpu_index
from greenai.stores import tracking
from greenai.stores.sweep_folder import SweepFolder
from greenai.stores.url import StoreURL
from greenai.sweep.study import SweepStudy
from greenai.training.loop import EpochResult
from greenai.trial.figures import TrialFigures, epoch_metrics
from greenai.trial.packed import packed
from greenai.trial.sweep_identity import settings

log = logging.getLogger(__name__)
RULE = (
    "each interval between counter readings split equally among the trials active in it; "
    "intervals with no trial active are the batch's overhead"
)
ENERGY_METRICS = (
    "energy_j",
    "trial_overhead_energy_j",
    "train_energy_j",
    "eval_energy_j",
    "gpu_energy_j",
    "cpu_energy_j",
    "energy_per_train_sample_j",
    "net_energy_j",
    "train_net_energy_j",
    "idle_power_w",
    "context_power_w",
    "idle_settled",
    "net_energy_negative",
)
EPOCH_ENERGY_METRICS = (
    "epoch_energy_j",
    "epoch_gpu_energy_j",
    "epoch_cpu_energy_j",
    "eval_energy_j_epoch",
    "epoch_net_energy_j",
)


class BatchEnergy:
    """The sweeper's side: counter readings at each batch's ends, attribution when it ends."""

    def __init__(
        self, trials_per_gpu: int, counters: ZeusCounters | None, folder: SweepFolder, tracking_store: StoreURL
    ) -> None:
        self.trials_per_gpu, self.counters, self.folder, self.tracking_store = (
            trials_per_gpu,
            counters,
            folder,
            tracking_store,
        )
        self._begin: Reading | None = None

    @classmethod
    def for_sweep(cls, config: DictConfig, folder: SweepFolder) -> BatchEnergy:
        k = int(settings(config).sweep.trials_per_gpu)  # always 1 in a user's app (app_settings.check)
        store = StoreURL.tracking(settings(config).tracking.uri, config.hydra.runtime.cwd)
        if k <= 1:
            return cls(k, None, folder, store)
        if not packed(config):
            log.info("trials_per_gpu=%d: no CUDA GPU here, so trials run side by side, each measured apart", k)
            return cls(k, None, folder, store)
        device = torch.device(settings(config).device) if settings(config).device != "auto" else torch.device("cuda")
        counters = ZeusCounters(gpu_index(device))
        if counters.gpu is None:
            log.warning(
                "trials_per_gpu=%d: cannot read the GPU's counters (%s); energies overlap", k, counters.unread["gpu"]
            )
            return cls(k, None, folder, store)
        return cls(k, counters, folder, store)

    def begin(self) -> None:
        self._begin = self.counters.read() if self.counters else None

    def end(self, study: SweepStudy, trials: list[optuna.Trial]) -> dict[int, float]:
        """Attribute the batch's energy; the attributed energy of each trial, by trial number."""
        if self.counters is None or self._begin is None:
            return {}
        ended = self.counters.read()
        timelines = {t.number: self.folder.timeline(t.number) for t in trials}
        readings = [self._begin, ended] + [
            Reading(r["t"], r["j"]) for lines in timelines.values() for r in lines if "t" in r
        ]
        result = attribute(_windows(timelines), readings, self.counters.wraps)
        batch_j, overhead_j = sum(result.total.joules.values()), sum(result.overhead.joules.values())
        log.info(
            "batch of %d packed trials: %.1f J over %.1f s; overhead (no trial active) %.1f J over %.1f s",
            len(trials),
            batch_j,
            ended.time - self._begin.time,
            overhead_j,
            result.overhead.seconds,
        )
        attributed, entries = {}, []
        for number, lines in timelines.items():
            figures, per_epoch = _figures(number, lines, result.windows)
            final = {k: v for k, v in figures.metrics().items() if k in ENERGY_METRICS}
            attributed[number] = final.get("energy_j") or 0.0
            self._record(study, number, final, per_epoch, batch_j, overhead_j, len(trials))
            entries += _ledger_entry(number, lines, final)
        self.folder.append_ledger(*entries)
        return attributed

    def _record(
        self,
        study: SweepStudy,
        number: int,
        final: dict[str, float | None],
        per_epoch: dict[int, dict[str, float | None]],
        batch_j: float,
        overhead_j: float,
        size: int,
    ) -> None:
        frozen = study.frozen(number)
        if final.get("energy_j") is not None:
            figures = {k: v for k, v in final.items() if k in names.RECORDED_METRICS and v is not None}
            study.set_attrs(number, {names.FIGURES_ATTR: figures})
        run_id = frozen.user_attrs.get(names.MLFLOW_RUN_ATTR)
        if not run_id:
            return
        run = tracking.RunLogger(tracking.client(self.tracking_store), run_id)
        for step, metrics in per_epoch.items():
            run.metrics(metrics, step=step)
        run.metrics({**final, "batch_energy_j": batch_j, "batch_overhead_energy_j": overhead_j, "batch_trials": size})
        run.tags({names.ENERGY_SOURCE: Source.attributed.value, "energy_attribution": RULE})


def _ledger_entry(number: int, lines: list[dict[str, Any]], final: dict[str, float | None]) -> list[dict[str, Any]]:
    """A packed trial's life on the sweep's ledger: from its first window to its last, with the
    energy attributed to it (its start-up and close were other trials' time, or nobody's)."""
    times = [r["t"] for r in lines if "t" in r]
    if not times:
        return []
    joules = joules_of(final.get("gpu_energy_j"), final.get("cpu_energy_j"))
    overhead = final.get("trial_overhead_energy_j") or 0.0
    return [Entry(TRIAL, f"trial {number}", min(times), max(times), joules, socket.gethostname(), overhead).saved()]


def _windows(timelines: dict[int, list[dict[str, Any]]]) -> list[Window]:
    windows = []
    for number, lines in timelines.items():
        begins = {(r["window"], r["n"]): r["t"] for r in lines if r["event"] == "begin"}
        for r in lines:
            key = (r.get("window"), r.get("n"))
            if r["event"] == "end" and key in begins:
                windows.append(Window((number, *key), begins[key], r["t"]))
    return windows


def _figures(
    number: int, lines: list[dict[str, Any]], shares: dict[Hashable, Any]
) -> tuple[TrialFigures, dict[int, dict[str, float | None]]]:
    """The trial's energy figures from its attributed windows: the n-th train and eval windows
    are its n-th epoch (epochs counted across repeats)."""
    notes: dict[str, Any] = {}
    for r in lines:
        if r["event"] == "note":
            notes.update(r)
    idle = IdlePower.load(notes["idle"]) if notes.get("idle") else None
    figures = TrialFigures(train_images=int(notes.get("train_images", 0)), idle=idle)
    seconds = {(r["window"], r["n"]): r["t"] for r in lines if r["event"] == "begin"}
    ends = {(r["window"], r["n"]): r["t"] for r in lines if r["event"] == "end"}
    per_epoch = {}
    step = 1
    while ("train", step) in ends and ("eval", step) in ends:
        train = _measurement(shares[(number, "train", step)], ends[("train", step)] - seconds[("train", step)])
        evaluation = _measurement(shares[(number, "eval", step)], ends[("eval", step)] - seconds[("eval", step)])
        result = EpochResult(step, math.nan, math.nan, math.nan, train, evaluation)
        figures.epochs.append(result)
        if ("records", step) in ends:
            figures.records.append(
                _measurement(shares[(number, "records", step)], ends[("records", step)] - seconds[("records", step)])
            )
        per_epoch[step] = {k: v for k, v in epoch_metrics(result, idle).items() if k in EPOCH_ENERGY_METRICS}
        step += 1
    for key in sorted(k for k in ends if k[0] == "setup" and (number, *k) in shares):  # each repeat's model
        figures.records.append(_measurement(shares[(number, *key)], ends[key] - seconds[key]))
    return figures, per_epoch


def _measurement(share: Any, seconds: float) -> Measurement:
    joules = by_component(share.joules)
    gpu = joules.get("gpu")
    cpu_parts = [joules[k] for k in ("cpu", "dram") if k in joules]
    return Measurement(
        seconds, gpu, sum(cpu_parts) if cpu_parts else None, Source.attributed, charged_seconds=share.seconds
    )
