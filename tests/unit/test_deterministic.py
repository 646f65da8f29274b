"""deterministic=true: torch's deterministic algorithms, cuBLAS's fixed workspace and cuDNN's
deterministic choice, all switched together (and all back off for the next trial of a process).
The bit-for-bit check on a GPU is tests/e2e/test_gpu.py::test_deterministic_training_gives_identical_weights."""

from __future__ import annotations

import os

import pytest
import torch

from greenai.training import devices


@pytest.fixture
def restored(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    yield
    torch.use_deterministic_algorithms(before[0])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[1:]


def test_deterministic_switches_torch_cublas_and_cudnn_together(restored):
    devices.set_deterministic(True)
    assert torch.are_deterministic_algorithms_enabled()
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark


def test_off_again_for_the_next_trial_of_the_process(restored):
    devices.set_deterministic(True)
    devices.set_deterministic(False)
    assert not torch.are_deterministic_algorithms_enabled()
    assert not torch.backends.cudnn.deterministic and torch.backends.cudnn.benchmark


def test_a_workspace_setting_from_the_environment_is_kept(restored, monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    devices.set_deterministic(True)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
