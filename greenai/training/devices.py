"""The training device: which one (`device=auto|cpu|cuda|cuda:N`), whether torch can really use
the GPU the driver shows, and the reproducibility switch for it."""

from __future__ import annotations

import functools
import logging
import os

import torch

from greenai.errors import ConfigError

log = logging.getLogger(__name__)


@functools.cache
def nvml_gpu_count() -> int:
    """GPUs the NVIDIA driver shows (0 where there is no driver or NVML library)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no library, no driver, no device: all mean "none here"
        return 0


def driver_version() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            version = pynvml.nvmlSystemGetDriverVersion()
            return version.decode() if isinstance(version, bytes) else str(version)
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return None


def _unusable_gpu(key: str, value: str) -> ConfigError:
    return ConfigError(
        key,
        value,
        f"the NVIDIA driver shows {nvml_gpu_count()} GPU(s) (driver {driver_version()}) but torch "
        f"{torch.__version__} (built for CUDA {torch.version.cuda}) cannot use them; install a torch "
        f"build that matches the driver, or set device=cpu to train on the CPU anyway",
    )


def gpus_hidden() -> str | None:
    """Why CUDA sees no GPU on purpose: CUDA_VISIBLE_DEVICES set to no device (empty, or a
    negative index first, which ends CUDA's list there); None where it leaves GPUs visible."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    first = value.split(",")[0].strip()
    if first == "" or first.startswith("-"):
        return f"CUDA_VISIBLE_DEVICES={value!r} hides every GPU"
    return None


def pick_device(name: str) -> torch.device:
    """`auto`: the first CUDA GPU if torch can use one, else the CPU. A GPU the driver shows
    but torch cannot use (a CUDA build newer than the driver) stops the command rather than
    training quietly, and slowly, on the CPU; GPUs hidden on purpose (CUDA_VISIBLE_DEVICES="")
    mean the CPU."""
    hidden = gpus_hidden()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if hidden:
            log.info("device=auto: %s, so training runs on the CPU", hidden)
            return torch.device("cpu")
        if nvml_gpu_count() > 0:
            raise _unusable_gpu("device", name)
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError("device", name, "must be auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        if hidden:
            raise ConfigError("device", name, f"{hidden}; unset it, or use device=cpu or device=auto")
        if nvml_gpu_count() > 0:
            raise _unusable_gpu("device", name)
        raise ConfigError("device", name, "no CUDA GPU is visible here; use device=auto or device=cpu")
    return device


def free_memory(device: torch.device) -> int:
    """Bytes free for data on `device`: the GPU's free memory, or the host's available memory."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


# cuBLAS's fixed-size workspace, without which its matrix products may differ run to run
# (https://docs.nvidia.com/cuda/cublas/#results-reproducibility).
CUBLAS_WORKSPACE = ":4096:8"


def set_deterministic(enabled: bool) -> None:
    """On: torch's deterministic algorithms wherever they exist (`use_deterministic_algorithms`),
    cuBLAS's fixed workspace, cuDNN's deterministic algorithms and no autotuning, so the same
    seed gives the same weights run after run on one GPU, at some cost in speed. An operation
    with no deterministic implementation warns rather than failing the trial (none of greenai's
    models uses one: tests/e2e/test_gpu.py trains twice and compares the weights bit for bit). Off:
    cuDNN picks the fastest algorithm for each shape once (a trial's shapes repeat every step;
    a fused group's grouped convolutions gain about a tenth on an H200)."""
    if enabled:
        _fix_cublas_workspace()
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled


def _fix_cublas_workspace() -> None:
    """cuBLAS reads the setting when it starts in a process: set it before any CUDA work."""
    if os.environ.get("CUBLAS_WORKSPACE_CONFIG") in (":4096:8", ":16:8"):
        return
    if torch.cuda.is_initialized():
        log.warning(
            "deterministic=true: CUDA started in this process before CUBLAS_WORKSPACE_CONFIG was set, so "
            "matrix products may still vary; set CUBLAS_WORKSPACE_CONFIG=%s in the environment",
            CUBLAS_WORKSPACE,
        )
    os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE


def gpus_for_trial(device: str = "auto") -> int:
    """GPUs a launcher should give each trial: one where training will use one, else none (a
    launcher asked for a GPU the machine lacks would not start the job)."""
    if device == "cpu":
        return 0
    return 1 if torch.cuda.is_available() else 0


def register_resolvers() -> None:
    """`${greenai.gpus_per_trial:${device}}`, for the ready launcher configs in conf/hydra/launcher."""
    from omegaconf import OmegaConf

    OmegaConf.register_resolver("greenai.gpus_per_trial", gpus_for_trial, replace=True)
