"""What a trial knows of the Hydra job it runs in: mode, job number, folders, its sweep's
parent MLflow run, and the names and tags derived from them."""

from __future__ import annotations

import functools
import platform
import shutil
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from greenai.sweep.naming import searcher_name
from greenai.redaction import redact

PARENT_RUN_FILE = Path(".greenai") / "parent_run_id"
VERSIONED = ("greenai", "torch", "torchvision", "zeus", "mlflow", "hydra-core", "optuna")
# Keys whose values may hold credentials: logged redacted.
URL_KEYS = ("tracking.uri", "sweep.storage")


def write_parent_run_id(sweep_dir: str | Path, run_id: str) -> None:
    path = Path(sweep_dir) / PARENT_RUN_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    tmp.write_text(run_id)
    tmp.replace(path)


def read_parent_run_id(sweep_dir: str | Path) -> str | None:
    path = Path(sweep_dir) / PARENT_RUN_FILE
    return path.read_text().strip() if path.is_file() else None


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


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


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
            parent_run_id=read_parent_run_id(sweep_dir) if sweep_dir else None,
            searcher=searcher_name(hc.sweeper) if multirun else None,
            study_name=study_name if trial_number is not None else None,
        )

    @property
    def round(self) -> int | None:
        """1-based position in the sweep: Optuna's trial number where there is one."""
        if self.trial_number is not None:
            return self.trial_number + 1
        return self.job_num + 1 if self.multirun else None

    def run_name(self, architecture: str, seed: int) -> str:
        name = f"{architecture}-s{seed}"
        return f"{name}-round{self.round}" if self.trial_number is not None else name

    def tags(self) -> dict[str, object]:
        tags: dict[str, object] = {"hydra.output_dir": self.output_dir}
        if self.multirun:
            tags.update({"hydra.job_num": self.job_num, "hydra.sweep_dir": self.sweep_dir, "greenai.round": self.round})
        if self.searcher:
            tags["greenai.searcher"] = self.searcher
        if self.trial_number is not None:
            tags["optuna.trial_number"] = self.trial_number
            tags["greenai.study_name"] = self.study_name
        if self.parent_run_id:
            tags["mlflow.parentRunId"] = self.parent_run_id
        return tags

    @staticmethod
    @functools.cache
    def versions() -> dict[str, object]:
        found: dict[str, object] = {"versions.python": platform.python_version()}
        for package in VERSIONED:
            try:
                found[f"versions.{package}"] = metadata.version(package)
            except metadata.PackageNotFoundError:
                continue
        return found

    @staticmethod
    def without_hydra(cfg: DictConfig) -> DictConfig:
        return OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "hydra"])

    @classmethod
    def flat_params(cls, cfg: DictConfig) -> dict[str, object]:
        """The job's config as dotted params, with credentials in URLs hidden."""
        tree = OmegaConf.to_container(cls.without_hydra(cfg), resolve=True, enum_to_str=True)
        assert isinstance(tree, dict)
        flat = flatten(tree)
        for key in URL_KEYS:
            if isinstance(flat.get(key), str):
                flat[key] = redact(flat[key])
        return flat
