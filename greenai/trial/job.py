"""What a trial knows of the Hydra job it runs in: mode, job number, folders, its sweep's
parent MLflow run and searcher."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from greenai.stores.sweep_folder import SweepFolder
from greenai.trial.sweep_identity import searcher_name


def discard_run_folder() -> None:
    """A single run refused for bad input leaves no folder behind: only Hydra's own files
    (.hydra/, the log) are removed, then the folders they leave empty, up to the launch dir."""
    hc = HydraConfig.get()
    out, top = Path(hc.runtime.output_dir), Path(hc.runtime.cwd)
    if not out.is_dir() or any(p.name != ".hydra" and p.suffix != ".log" for p in out.iterdir()):
        return
    shutil.rmtree(out)
    for parent in out.parents:
        if parent == top or not parent.is_relative_to(top) or any(parent.iterdir()):
            break
        parent.rmdir()


@dataclass(frozen=True)
class JobContext:
    multirun: bool
    job_num: int
    trial_number: int | None
    sweep_dir: str | None
    output_dir: str
    launch_dir: str
    parent_run_id: str | None
    searcher: str | None = None
    study_name: str | None = None

    @staticmethod
    def is_multirun() -> bool:
        return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN

    @classmethod
    def from_hydra(cls, trial_number: int | None = None, study_name: str | None = None) -> JobContext:
        hc = HydraConfig.get()
        multirun = hc.mode == RunMode.MULTIRUN
        sweep_dir = str(Path(hc.runtime.cwd) / hc.sweep.dir) if multirun else None
        return cls(
            multirun=multirun,
            job_num=int(hc.job.num) if multirun else 0,
            trial_number=trial_number,
            sweep_dir=sweep_dir,
            output_dir=hc.runtime.output_dir,
            launch_dir=hc.runtime.cwd,
            parent_run_id=SweepFolder(sweep_dir).parent_run_id() if sweep_dir else None,
            searcher=searcher_name(hc.sweeper) if multirun else None,
            study_name=study_name if trial_number is not None else None,
        )

    @property
    def sweep_folder(self) -> SweepFolder | None:
        return SweepFolder(self.sweep_dir) if self.sweep_dir else None

    @property
    def round(self) -> int | None:
        """1-based position in the sweep: Optuna's trial number where there is one."""
        if self.trial_number is not None:
            return self.trial_number + 1
        return self.job_num + 1 if self.multirun else None

    def run_name(self, architecture: str, seed: int) -> str:
        name = f"{architecture}-s{seed}"
        return f"{name}-round{self.round}" if self.trial_number is not None else name
