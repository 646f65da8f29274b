"""Hydra callback: the sweep's MLflow parent run, one per multirun, holding the sweep's totals.

on_multirun_start refuses bad input (every job of a plain sweep, or a greenai sweep's settings
and search space) before any training, opens the parent run (or reopens the one of a resumed
Optuna study), leaves its id in the sweep folder for the jobs, and measures the idle power of
this host before the first trial starts, then opens the sweep's energy ledger (its counters read
from then to the end: greenai.sweep.ledger). Each trial adds itself to the parent's running totals
as it ends (greenai.trial.record). on_multirun_end closes the ledger, reads the child runs back,
closes any a dead process left RUNNING, and logs: trials run, finished, failed and pruned; total
energy and time; the ledger (counters' total, trials, overhead, idle between, unexplained);
best accuracy and the round it was first reached; for two-objective studies the Pareto set.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from greenai import names
from greenai.energy.idle import cuda_context, idle_power
from greenai.energy.ledger import Ledger
from greenai.energy.meters import make_meter
from greenai.errors import (
    GreenAIError,
    Interrupted,
    StoreFull,
    fail,
    failure_reason,
    interrupt_on_sigterm,
)
from greenai.stores import log_files, tracking
from greenai.stores.full_disk import exit_on_full, folder_full
from greenai.stores.owner import owner_alive, owner_id
from greenai.stores.reachability import check_reachable
from greenai.stores.redaction import redact_logs, redact_text
from greenai.stores.run_rows import row_from_run
from greenai.stores.study_storage import make_storage, study_trials
from greenai.stores.sweep_folder import RESULTS, SweepFolder
from greenai.stores.url import StoreURL
from greenai.sweep.ledger import SweepLedger, activate, active, summary
from greenai.sweep.sweeper import check_sweep
from greenai.sweep.totals import sweep_summary
from greenai.training.devices import pick_device
from greenai.trial.outcome import Pruned
from greenai.trial.preflight import check_jobs, job_override_lists
from greenai.trial.sweep_identity import in_app, is_greenai_sweep, searcher_name, settings, settings_key, study_name

log = logging.getLogger(__name__)


class SweepRunCallback(Callback):
    def __init__(self) -> None:
        self.run: tracking.RunLogger | None = None
        self.folder: SweepFolder | None = None
        self.study: str | None = None
        self.storage: StoreURL | None = None
        self.grace = 600

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        interrupt_on_sigterm()
        redact_logs()
        # Hydra turns a callback's exceptions into warnings and carries on; bad input must stop
        # the command, so errors leave as SystemExit (one line on stderr, exit status 2).
        try:
            search = self._check(config)
            self._start(config, search)
            self._measure_idle(config)
            self._open_ledger(config)
        except StoreFull as exc:
            exit_on_full(exc, "sweep")
        except GreenAIError as exc:
            fail(str(exc))
        except Exception as exc:
            stopped = folder_full("hydra.sweep.dir", Path(os.getcwd()) / str(config.hydra.sweep.dir), exc)
            if stopped is not None:  # the parent run's id or the idle power, written in the sweep folder
                exit_on_full(stopped, "sweep")
            fail(
                f"{settings_key(config, 'tracking.uri')}={redact_text(str(settings(config).tracking.uri))}: "
                f"cannot open the sweep's MLflow run ({failure_reason(exc)})"
            )

    @staticmethod
    def _check(config: DictConfig) -> str | None:
        """The search space's parameter names of a greenai sweep (None for a plain sweep)."""
        if is_greenai_sweep(config):
            return ",".join(sorted(check_sweep(config).distributions))
        if settings(config).sweep.pruner:
            group = "greenai/" if in_app(config) else ""  # where a user's app finds greenai's groups
            fail(
                f"{group}pruner: pruning needs an Optuna searcher ({group}searcher=grid|random|bayes|tpe); "
                "Hydra's plain sweep runs every job to the end"
            )
        check_jobs(config, job_override_lists(config))
        return None

    def _start(self, config: DictConfig, search: str | None) -> None:
        launch_dir, greenai = os.getcwd(), settings(config)  # a user's app: its `greenai` node
        self.folder = SweepFolder(Path(launch_dir) / str(config.hydra.sweep.dir))
        store = StoreURL.tracking(greenai.tracking.uri, launch_dir)
        check_reachable(store, settings_key(config, "tracking.uri"))
        self.study = study_name(config) if search is not None else None
        self.grace = int(greenai.sweep.heartbeat_grace_seconds)
        self.storage = StoreURL.study(greenai.sweep.storage, launch_dir) if self.study else None
        if self.storage:
            check_reachable(self.storage, settings_key(config, "sweep.storage"))
        mlflow = tracking.client(store)
        # Several processes resuming one study at once must find or create one parent run.
        with store.lock(f"parent:{self.study}"):
            self.run = self._reopen(mlflow, config) or self._create(mlflow, config, search)
        self.folder.write_parent_run_id(self.run.run_id)
        log.info(
            "MLflow sweep run %s in %s (experiment %s)", self.run.run_id, store.redacted, greenai.tracking.experiment
        )

    def _reopen(self, mlflow: Any, config: DictConfig) -> tracking.RunLogger | None:
        """A resumed study keeps one parent run: reopen it rather than start a duplicate."""
        if self.study is None:
            return None
        previous = tracking.find_run(
            mlflow, str(settings(config).tracking.experiment), {names.RUN_KIND: "sweep", names.STUDY: self.study}
        )
        if previous is None:
            return None
        mlflow.update_run(previous.info.run_id, status="RUNNING")
        run = tracking.RunLogger(mlflow, previous.info.run_id)
        run.tags({names.SWEEP_DIR: self.folder.path, names.RESUMED: "true", names.OWNER: owner_id()})
        self._close_orphans(run)
        return run

    def _create(self, mlflow: Any, config: DictConfig, search: str | None) -> tracking.RunLogger:
        tags = {
            names.RUN_KIND: "sweep",
            names.TRIAL_STATE: "running",
            names.OWNER: owner_id(),
            names.SWEEP_DIR: str(self.folder.path),
            "hydra.sweeper": str(OmegaConf.select(config, "hydra.sweeper._target_")),
            names.SEARCHER: searcher_name(config.hydra.sweeper),
            names.COMMAND: " ".join(OmegaConf.to_container(config.hydra.overrides.task, resolve=False) or []),
        }
        if self.study is not None:
            tags[names.STUDY] = self.study
            tags[names.SEARCH_SPACE] = search
        name = f"sweep-{self.study}" if self.study else f"sweep-{self.folder.path.parent.name}-{self.folder.path.name}"
        return tracking.create_run(
            mlflow, str(settings(config).tracking.experiment), name, {k: redact_text(str(v)) for k, v in tags.items()}
        )

    def _measure_idle(self, config: DictConfig) -> None:
        """Idle power of this host, before the first trial starts: no job has loaded data or
        started CUDA yet. Jobs launched elsewhere (Slurm) measure their own host's."""
        launcher = str(OmegaConf.select(config, "hydra.launcher._target_") or "")
        greenai = settings(config)
        if "Slurm" in launcher or float(greenai.energy.idle_seconds) <= 0:
            return
        try:
            device = pick_device(str(greenai.device))
            meter = make_meter(greenai.energy, device)
            idle_power(meter, float(greenai.energy.idle_seconds), self.folder, cuda_context(device))
        except GreenAIError as exc:  # the jobs will say it, with the job's own settings
            log.info("idle power not measured before the sweep (%s)", exc)

    def _open_ledger(self, config: DictConfig) -> None:
        """The sweep's energy ledger, its counters read from now (after the idle measurement)
        to the multirun's end. Jobs launched elsewhere (Slurm) run on hosts whose counters this
        process cannot read: no ledger."""
        launcher = str(OmegaConf.select(config, "hydra.launcher._target_") or "")
        assert self.folder is not None
        # Kept in the sweep.ledger module, not on this callback: launchers that run jobs in other
        # processes (joblib) pickle the callbacks, and the ledger's reader is a thread.
        activate(None if "Slurm" in launcher else SweepLedger.open(config, self.folder))

    def _close_orphans(self, run: tracking.RunLogger) -> None:
        """Trial runs a dead process left RUNNING are closed, never left running: FINISHED if
        their Optuna trial was told a result before the process died, else KILLED."""
        orphans = [
            child
            for child in tracking.child_runs(run.mlflow, run.run_id)
            if child.info.status == "RUNNING" and owner_alive(child.data.tags.get(names.OWNER)) is False
        ]
        told = self._study_states() if orphans else {}
        for child in orphans:
            orphan = tracking.RunLogger(run.mlflow, child.info.run_id)
            number = child.data.tags.get(names.TRIAL_NUMBER)
            state = told.get(int(number)) if number is not None else None
            if state in ("COMPLETE", "PRUNED"):
                tracking.close_run(orphan, None if state == "COMPLETE" else Pruned("pruned (closed on resume)"))
                continue
            tracking.close_run(orphan, Interrupted("its process ended without closing the run"))

    def _study_states(self) -> dict[int, str]:
        """Optuna trial number -> state name, for this sweep's study (empty without one)."""
        if self.study is None or self.storage is None:
            return {}
        trials = study_trials(make_storage(self.storage, self.grace), self.study) or []
        return {t.number: t.state.name for t in trials}

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        exc = sys.exc_info()[1]  # set when the sweep is ending by an exception
        if self.run is None:
            return
        assert self.folder is not None
        # The summary is logged to the last job's log too, which may be on a full disk: said once.
        log_files.guard_log_files(("hydra.sweep.dir", self.folder.path))
        ledger = self._close_ledger()
        try:
            try:
                self._summarize(config, ledger)
            finally:
                tracking.close_run(self.run, exc)
        except StoreFull as full:
            # The MLflow store's disk is full: the run stays open until the next command on the
            # store closes it. A sweep stopped by it says so in its one line; one that had ended
            # says it here.
            if not isinstance(exc, StoreFull):
                exit_on_full(full, "sweep")
            log.debug("the sweep's run is not summarized: %s", full)
        finally:
            self.run = None

    def _close_ledger(self) -> Ledger | None:
        """The ledger closed when the sweep's last job has ended, before the summary's own writes."""
        ledger = active()
        activate(None)
        if ledger is None:
            return None
        try:
            return ledger.close()
        except OSError as exc:  # the sweep folder unreadable: the summary goes on without it
            log.warning("energy ledger not closed: %s", exc)
            return None

    def _log_ledger(self, ledger: Ledger | None) -> None:
        """The ledger on the parent run: every term a metric, its source, the whole as an artifact."""
        assert self.run is not None
        if ledger is None:
            return
        self.run.metrics(ledger.metrics())
        source = "counters" if ledger.total is not None else "none: energy estimated, no independent counter"
        self.run.tags({names.LEDGER_SOURCE: source})
        self.run.text(json.dumps(summary(ledger), indent=2, default=str), "energy_ledger.json")
        log.info("%s", ledger.line())

    def _summarize(self, config: DictConfig, ledger: Ledger | None = None) -> None:
        assert self.run is not None and self.folder is not None
        self._close_orphans(self.run)
        children = tracking.child_runs(self.run.mlflow, self.run.run_id)
        rows = [row_from_run(r) for r in children]
        two_objectives = len(settings(config).objective.directions) > 1
        summary = sweep_summary(rows, two_objectives)
        self.run.metrics(
            {f"sweep_{k}": v for k, v in summary.items() if isinstance(v, (int, float)) and k != "best_round"}
        )
        if summary.get("best_round") is not None:
            self.run.metrics({"best_round": summary["best_round"]})
        sources = summary["energy_sources"]
        components = sorted(
            {c.data.tags[names.ENERGY_COMPONENTS] for c in children if names.ENERGY_COMPONENTS in c.data.tags}
        )
        self.run.tags(
            {
                names.ENERGY_SOURCE: "+".join(sources) if sources else "off",
                names.ENERGY_COMPONENTS: " | ".join(components) or "none",
            }
        )
        self._log_idle()
        self._log_ledger(ledger)
        results = self.folder.results()
        if results is not None:
            self.run.text(redact_text(self.folder.results_file.read_text()), RESULTS)
            if results.get("stop_reason"):
                self.run.tags({names.STOP_REASON: results["stop_reason"]})
        if two_objectives:
            self._mark_pareto(summary.get("pareto", []))
        self.run.text(json.dumps(summary, indent=2, default=str), "sweep_summary.json")
        log.info("sweep: %s", _one_line(summary))

    def _log_idle(self) -> None:
        """The idle power measured on each host of the sweep."""
        assert self.run is not None and self.folder is not None
        for file_name, saved in self.folder.host_measurements("idle"):
            self.run.metrics(
                {
                    "idle_power_w": saved["watts"],
                    "context_power_w": saved.get("context_watts"),
                    "idle_settled": float(saved.get("settled", True)),
                }
            )
            self.run.tags({names.IDLE_SOURCE: saved["source"]})
            self.run.text(json.dumps(saved), f"idle/{file_name}")

    def _mark_pareto(self, pareto: list[dict[str, Any]]) -> None:
        assert self.run is not None
        for point in pareto:
            tracking.RunLogger(self.run.mlflow, point["run_id"]).tags({names.PARETO: "true"})
        self.run.tags({names.PARETO_ROUNDS: ",".join(str(p["round"]) for p in pareto)})
        self.run.text(json.dumps(pareto, indent=2), "pareto.json")
        for point in pareto:
            log.info(
                "Pareto-optimal: round %s accuracy %.4f energy %.1f J",
                point["round"],
                point["accuracy"],
                point["energy_j"],
            )


def _one_line(summary: dict[str, Any]) -> str:
    parts = [
        f"{summary['trials']} trials ({summary['trials_finished']} finished, {summary['trials_pruned']} pruned, "
        f"{summary['trials_failed']} failed, {summary['trials_killed']} killed)"
    ]
    if summary.get("energy_j") is not None:
        parts.append(f"energy {summary['energy_j']:.1f} J ({'+'.join(summary['energy_sources'])})")
    if "best_accuracy" in summary:
        parts.append(f"best accuracy {summary['best_accuracy']:.4f} first at round {summary['best_round']}")
    return ", ".join(parts)
