"""The files greenai keeps in a sweep's folder (Hydra's `hydra.sweep.dir`).

The sweeping process and the jobs (in-process, joblib workers, Slurm jobs on other hosts with
the folder on a shared filesystem) talk through these files; this module alone knows their
names and formats. Every write is atomic (written aside, then renamed), so a reader never sees
half a file.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from greenai.files import write_atomic
from greenai.stores.locks import file_lock

META = ".greenai"
RESULTS = "optimization_results.yaml"


class SweepFolder:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.meta = self.path / META

    # ------------------------------------------------------------ the sweep's MLflow parent run

    @property
    def _parent_file(self) -> Path:
        return self.meta / "parent_run_id"

    def write_parent_run_id(self, run_id: str) -> None:
        write_atomic(self._parent_file, run_id)

    def parent_run_id(self) -> str | None:
        return self._parent_file.read_text().strip() if self._parent_file.is_file() else None

    # ------------------------------------------------------------ measurements made once per host

    def _host_file(self, kind: str, key: str) -> Path:
        safe = key.replace("/", "_").replace(" ", "_")[:80]
        return self.meta / f"{kind}-{socket.gethostname()}-{safe}.json"

    def once_per_host(self, kind: str, key: str, measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """What `measure` returned, measured once per sweep, host, kind and key: the first process
        to get here measures (under the file's lock) while the others wait, then read its file."""
        path = self._host_file(kind, key)
        with file_lock(path.with_name(path.name + ".lock")):
            if not path.is_file():
                measured = measure()
                write_atomic(path, json.dumps(measured))
                return measured
        return json.loads(path.read_text())

    def host_measurement(self, kind: str, key: str) -> dict[str, Any] | None:
        """This host's measurement of `kind` and `key`, if one was made."""
        path = self._host_file(kind, key)
        return json.loads(path.read_text()) if path.is_file() else None

    def host_measurements(self, kind: str) -> list[tuple[str, dict[str, Any]]]:
        """(file name, saved measurement) for every host that measured `kind`."""
        return [(p.name, json.loads(p.read_text())) for p in sorted(self.meta.glob(f"{kind}-*.json"))]

    # ------------------------------------------------------------ packed trials' counter timelines

    def timeline_file(self, trial_number: int) -> Path:
        return self.meta / "timeline" / f"trial-{trial_number}.jsonl"

    def append_timeline(self, trial_number: int, record: dict[str, Any]) -> None:
        """One line per record, appended whole: the sweeper reads the file once the batch ends."""
        path = self.timeline_file(trial_number)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as out:
            out.write(json.dumps(record) + "\n")

    def timeline(self, trial_number: int) -> list[dict[str, Any]]:
        path = self.timeline_file(trial_number)
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    # ------------------------------------------------------------ the sweep's energy ledger

    def append_ledger(self, *records: dict[str, Any]) -> None:
        """A process's entries on the sweep's ledger (its trials' lives, its overhead), one line
        each, in a file of its own: no two processes write one file."""
        path = self.meta / "ledger" / f"{socket.gethostname()}-{os.getpid()}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as out:
            out.writelines(json.dumps(record) + "\n" for record in records)

    def ledger_entries(self) -> list[dict[str, Any]]:
        lines = [line for p in sorted((self.meta / "ledger").glob("*.jsonl")) for line in p.read_text().splitlines()]
        return [json.loads(line) for line in lines if line.strip()]

    # ------------------------------------------------------------ running totals for the parent run

    def add_progress(self, *records: dict[str, Any]) -> dict[str, float | None]:
        """Add ended trials to the sweep's progress file (under its lock: jobs of several
        processes end at once) and return the totals so far."""
        path = self.meta / "progress.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(path.with_name(path.name + ".lock")):
            with path.open("a") as out:
                out.writelines(json.dumps(record) + "\n" for record in records)
            records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        energies = [r["energy_j"] for r in records if r.get("energy_j") is not None]
        accuracies = [r["accuracy"] for r in records if r.get("state") == "finished" and r.get("accuracy") is not None]
        return {
            "trials": float(len(records)),
            "energy_j": sum(energies) if energies else None,
            "best_accuracy": max(accuracies) if accuracies else None,
        }

    # ------------------------------------------------------------ the sweeper's results

    @property
    def results_file(self) -> Path:
        return self.path / RESULTS

    def write_results(self, results: dict[str, Any]) -> None:
        write_atomic(self.results_file, OmegaConf.to_yaml(OmegaConf.create(results)))

    def results(self) -> dict[str, Any] | None:
        if not self.results_file.is_file():
            return None
        loaded = OmegaConf.to_container(OmegaConf.load(self.results_file))
        return loaded if isinstance(loaded, dict) else None
