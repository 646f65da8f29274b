"""Hydra callback: one MLflow parent run per multirun, holding the sweep's totals.

on_multirun_start checks every job of a plain sweep (bad input fails before any training),
opens the parent run (or reopens the one of a resumed Optuna study) and leaves its id in the
sweep folder for the jobs. on_multirun_end reads the child runs back, closes any a dead process
left RUNNING, and logs: trials run, finished, failed and pruned; total energy and time; best
accuracy and the round it was first reached; for two-objective studies the Pareto set.
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

from greenai import tracking
from greenai.errors import GreenAIError, Interrupted, fail, interrupt_on_sigterm
from greenai.job import write_parent_run_id
from greenai.locks import store_lock
from greenai.reachability import check_reachable
from greenai.redaction import redact, redact_logs, redact_text
from greenai.run_rows import row_from_run
from greenai.sweep.naming import is_greenai_sweep, searcher_name, study_name
from greenai.sweep.owner import owner_alive
from greenai.sweep.study_link import Pruned, study_trials
from greenai.sweep.preflight import check_jobs, job_override_lists
from greenai.sweep.sweeper import check_space, parse_space, sweep_params
from greenai.sweep_totals import sweep_summary

log = logging.getLogger(__name__)
RESULTS_FILE = "optimization_results.yaml"
STUDY_TAG = "greenai.study_name"
PARETO_TAG = "greenai.pareto"


class SweepRunCallback(Callback):
    def __init__(self) -> None:
        self.run: tracking.RunLogger | None = None
        self.sweep_dir: Path | None = None
        self.study: str | None = None
        self.storage: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        interrupt_on_sigterm()
        redact_logs()
        # Hydra turns a callback's exceptions into warnings and carries on; bad input must stop
        # the command, so errors leave as SystemExit (one line on stderr, exit status 2).
        try:
            if is_greenai_sweep(config):
                check_space(config)
            else:
                if config.sweep.pruner:
                    fail("pruner: pruning needs an Optuna searcher (searcher=grid|random|bayes|tpe); Hydra's plain sweep runs every job to the end")
                check_jobs(config, job_override_lists(config))
            self._start(config)
        except GreenAIError as exc:
            fail(str(exc))
        except Exception as exc:
            fail(f"tracking.uri={redact(str(config.tracking.uri))}: cannot open the sweep's MLflow run ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")

    def _start(self, config: DictConfig) -> None:
        launch_dir = os.getcwd()
        self.sweep_dir = Path(launch_dir) / str(config.hydra.sweep.dir)
        uri = tracking.resolve_uri(config.tracking.uri, launch_dir)
        check_reachable(uri, "tracking.uri")
        self.study = study_name(config) if is_greenai_sweep(config) else None
        self.storage = tracking.resolve_uri(str(config.sweep.storage), launch_dir) if self.study else None
        if self.storage:
            check_reachable(self.storage, "sweep.storage")
        self.run = self._open_parent(uri, str(config.tracking.experiment), self.study, config)
        write_parent_run_id(self.sweep_dir, self.run.run_id)
        log.info("MLflow sweep run %s in %s (experiment %s)", self.run.run_id, redact(uri), config.tracking.experiment)

    def _open_parent(self, uri: str, experiment: str, study: str | None, config: DictConfig) -> tracking.RunLogger:
        mlflow = tracking.client(uri)
        # Several processes resuming one study at once must find or create one parent run.
        with store_lock(uri, f"parent:{study}"):
            return self._find_or_create_parent(mlflow, experiment, study, config)

    def _find_or_create_parent(self, mlflow: Any, experiment: str, study: str | None, config: DictConfig) -> tracking.RunLogger:
        if study is not None:
            previous = tracking.find_run(mlflow, experiment, {tracking.RUN_KIND: "sweep", STUDY_TAG: study})
            if previous is not None:
                # A resumed study keeps one parent run: reopen it rather than start a duplicate.
                mlflow.update_run(previous.info.run_id, status="RUNNING")
                run = tracking.RunLogger(mlflow, previous.info.run_id)
                run.tags({"hydra.sweep_dir": self.sweep_dir, "greenai.resumed": "true"})
                self._close_orphans(run)
                return run
        tags = {
            tracking.RUN_KIND: "sweep",
            tracking.TRIAL_STATE: "running",
            "hydra.sweep_dir": str(self.sweep_dir),
            "hydra.sweeper": str(OmegaConf.select(config, "hydra.sweeper._target_")),
            "greenai.searcher": searcher_name(config.hydra.sweeper),
            "greenai.command": " ".join(OmegaConf.to_container(config.hydra.overrides.task, resolve=False) or []),
        }
        if study is not None:
            tags[STUDY_TAG] = study
            tags["greenai.search_space"] = ",".join(sorted(parse_space(sweep_params(config))[0]))
        name = f"sweep-{study}" if study else f"sweep-{self.sweep_dir.parent.name}-{self.sweep_dir.name}"
        exp = tracking.experiment_id(mlflow, experiment)
        created = mlflow.create_run(exp, run_name=name, tags={k: redact_text(str(v)) for k, v in tags.items()})
        return tracking.RunLogger(mlflow, created.info.run_id)

    def _close_orphans(self, run: tracking.RunLogger) -> None:
        """Trial runs a dead process left RUNNING are closed, never left running: FINISHED if
        their Optuna trial was told a result before the process died, else KILLED."""
        orphans = [
            child for child in tracking.child_runs(run.mlflow, run.run_id)
            if child.info.status == "RUNNING" and owner_alive(child.data.tags.get("greenai.owner")) is False
        ]
        told = self._study_states() if orphans else {}
        for child in orphans:
            orphan = tracking.RunLogger(run.mlflow, child.info.run_id)
            number = child.data.tags.get("optuna.trial_number")
            state = told.get(int(number)) if number is not None else None
            if state in ("COMPLETE", "PRUNED"):
                tracking.close_run(orphan, None if state == "COMPLETE" else Pruned("pruned (closed on resume)"))
                continue
            orphan.tags({tracking.FAILURE_REASON: "process ended without closing the run (killed)"})
            tracking.close_run(orphan, Interrupted())

    def _study_states(self) -> dict[int, str]:
        """Optuna trial number -> state name, for this sweep's study (empty without one)."""
        if self.study is None or self.storage is None:
            return {}
        return {t.number: t.state.name for t in study_trials(self.storage, self.study) or []}

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        exc = sys.exc_info()[1]  # set when the sweep is ending by an exception
        if self.run is None:
            return
        try:
            self._summarize(config)
        finally:
            tracking.close_run(self.run, exc)
            self.run = None

    def _summarize(self, config: DictConfig) -> None:
        assert self.run is not None and self.sweep_dir is not None
        self._close_orphans(self.run)
        rows = [row_from_run(r) for r in tracking.child_runs(self.run.mlflow, self.run.run_id)]
        two_objectives = len(config.objective.directions) > 1
        summary = sweep_summary(rows, two_objectives)
        self.run.metrics({f"sweep_{k}": v for k, v in summary.items() if isinstance(v, (int, float)) and k != "best_round"})
        if summary.get("best_round") is not None:
            self.run.metrics({"best_round": summary["best_round"]})
        sources = summary["energy_sources"]
        self.run.tags({"energy_source": "+".join(sources) if sources else "off"})
        self._log_idle()
        results = self.sweep_dir / RESULTS_FILE
        if results.is_file():
            self.run.text(redact_text(results.read_text()), RESULTS_FILE)
            stop = OmegaConf.load(results).get("stop_reason")
            if stop:
                self.run.tags({"greenai.stop_reason": stop})
        if two_objectives:
            self._mark_pareto(summary.get("pareto", []))
        self.run.text(json.dumps(summary, indent=2, default=str), "sweep_summary.json")
        log.info("sweep: %s", _one_line(summary))

    def _log_idle(self) -> None:
        """The idle power the sweep's first job measured on each host (energy.idle_power)."""
        assert self.run is not None and self.sweep_dir is not None
        for path in sorted((self.sweep_dir / ".greenai").glob("idle-*.json")):
            saved = json.loads(path.read_text())
            self.run.metrics({"idle_power_w": saved["watts"]})
            self.run.tags({"idle_source": saved["source"]})
            self.run.text(path.read_text(), f"idle/{path.name}")

    def _mark_pareto(self, pareto: list[dict[str, Any]]) -> None:
        assert self.run is not None
        for point in pareto:
            tracking.RunLogger(self.run.mlflow, point["run_id"]).tags({PARETO_TAG: "true"})
        rounds = ",".join(str(p["round"]) for p in pareto)
        self.run.tags({"greenai.pareto_rounds": rounds})
        self.run.text(json.dumps(pareto, indent=2), "pareto.json")
        for point in pareto:
            log.info("Pareto-optimal: round %s accuracy %.4f energy %.1f J", point["round"], point["accuracy"], point["energy_j"])


def _one_line(summary: dict[str, Any]) -> str:
    parts = [f"{summary['trials']} trials ({summary['trials_finished']} finished, {summary['trials_pruned']} pruned, "
             f"{summary['trials_failed']} failed, {summary['trials_killed']} killed)"]
    if summary.get("energy_j") is not None:
        parts.append(f"energy {summary['energy_j']:.1f} J ({'+'.join(summary['energy_sources'])})")
    if "best_accuracy" in summary:
        parts.append(f"best accuracy {summary['best_accuracy']:.4f} first at round {summary['best_round']}")
    return ", ".join(parts)
