"""Shared fixtures: small datasets written by the tests, and a way to run the commands users
type (python -m greenai.train ...) in a subprocess with a fresh working folder."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from datasets_on_disk import tiny_args, write_cifar, write_fashion
from small_disk import small_disk  # noqa: F401 (the fixture: a small tmpfs the test fills)

REPO = Path(__file__).resolve().parent.parent  # the checkout (scripts/, conf/)
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture
def fashion_root(tmp_path: Path) -> Path:
    return write_fashion(tmp_path / "fashion")


@pytest.fixture
def cifar_root(tmp_path: Path) -> Path:
    return write_cifar(tmp_path / "cifar")


@pytest.fixture
def greenai(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run `python -m greenai.<module> ARGS` in a fresh working folder, as a user would."""
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("MLFLOW_EXPERIMENT_NAME", None)

    def run(
        *args: str,
        module: str = "train",
        timeout: float = 600,
        check: bool = True,
        extra_env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", f"greenai.{module}", *args],
            cwd=work,
            env={**env, **(extra_env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"exit {proc.returncode}\nSTDOUT:\n{proc.stdout[-4000:]}\nSTDERR:\n{proc.stderr[-6000:]}"
            )
        return proc

    def start(
        *args: str, log: Path, module: str = "train", extra_env: dict[str, str] | None = None
    ) -> subprocess.Popen:
        """Start the command in the background, its output going to `log`."""
        out = log.open("w")
        return subprocess.Popen(
            [sys.executable, "-m", f"greenai.{module}", *args],
            cwd=work,
            env={**env, **(extra_env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    run.cwd = work  # type: ignore[attr-defined]
    run.start = start  # type: ignore[attr-defined]
    return run


@pytest.fixture
def tiny(fashion_root: Path, tmp_path: Path) -> list[str]:
    return tiny_args(fashion_root, tmp_path / "cache")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `gpu` need a CUDA GPU: here they are reported as skipped, and
    benchmarks/gpu-check.sh runs them on a machine that has one."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU: run benchmarks/gpu-check.sh on a GPU machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
