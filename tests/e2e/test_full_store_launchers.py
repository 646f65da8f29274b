"""A full store stops a sweep whatever launches its jobs: Hydra's basic launcher, joblib's
workers, submitit's local jobs, greenai's fused launcher, and greenai's Optuna sweeper over
joblib. The MLflow store sits on a small tmpfs that the test fills while trial 1 of 3 trains;
trials 2 and 3 never log an epoch and open no run, each says it did not start, and the command
ends with the one line that says the sweep starts no further trial (exit status 3).

joblib's workers and submitit's jobs run the batch at once, in other processes. To have jobs
that have not begun training when trial 1 meets the full disk, those launchers run with a Hydra
callback of the test's own (`HOLD`, written under `hydra_plugins`, which greenai's app trusts)
that holds every job but the first at its start until the test has seen trial 1's job say the
sweep stops: jobs queued behind busy workers or a full Slurm array, made certain."""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

import pytest
from datasets_on_disk import tiny_args
from store_readers import trial_runs
from test_full_disk import EPOCHS, assert_one_line, runs_in, trials_in
from waiting import wait_for

pytestmark = pytest.mark.slow

HOLD = '''
"""Test-only: holds every job but the first at its start until a file exists."""
import time
from pathlib import Path

from hydra.experimental.callback import Callback


class HoldJobs(Callback):
    def __init__(self, release: str) -> None:
        self.release = Path(release)

    def on_job_start(self, config, **kwargs) -> None:
        deadline = time.monotonic() + 600
        while int(config.hydra.job.num) > 0 and not self.release.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
'''
SWEEP_STOPS = "no further job of this sweep starts"
LAUNCHERS = {
    "basic": [],
    "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=3"],
    "submitit": ["hydra/launcher=local"],
    "fused": ["hydra/launcher=fused"],
}
HELD = ("joblib", "submitit")
RUN = "simplecnn-conv{}-lin3-relu-s1234"  # a plain sweep's trial run, by conv_layers


def hold_jobs(tmp_path: Path) -> tuple[list[str], dict[str, str], Path]:
    """Overrides and environment that hold jobs #1 and #2 at their start, and the file that releases them."""
    package = tmp_path / "plugins" / "hydra_plugins" / "greenai_test_hold"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(HOLD)
    release = tmp_path / "release"
    path = os.pathsep.join(p for p in (str(tmp_path / "plugins"), os.environ.get("PYTHONPATH")) if p)
    args = [
        "+hydra.callbacks.hold._target_=hydra_plugins.greenai_test_hold.HoldJobs",
        f"+hydra.callbacks.hold.release={release}",
    ]
    return args, {"PYTHONPATH": path}, release


def wait_in_job_log(log: Path, text: str, proc) -> None:
    """wait_for on the log of a job, which the job creates as it starts."""
    deadline = time.monotonic() + 300
    while not log.exists():
        assert proc.poll() is None and time.monotonic() < deadline, f"no {log}"
        time.sleep(0.1)
    wait_for(log, text, proc)


def fill_during_trial_1(
    greenai, args: list[str], small_disk, tmp_path: Path, held: bool, trial_1: str
) -> tuple[str, str]:
    """Run the sweep, fill the disk once trial 1 (its run named `trial_1`) has logged epoch 2
    and, with jobs held, release them once trial 1's job has said the sweep stops: exit status 3
    and one line. What the command wrote, and what its jobs' logs hold."""
    extra_env = None
    if held:
        hold_args, extra_env, release = hold_jobs(tmp_path)
        args = [*args, *hold_args]
    log, first_job = tmp_path / "command.log", tmp_path / "sweep" / "0" / "train.log"
    proc = greenai.start(*args, f"hydra.sweep.dir={tmp_path / 'sweep'}", log=log, extra_env=extra_env)
    try:
        wait_in_job_log(first_job, f"{trial_1}] epoch   2/", proc)
        small_disk.fill()
        if held:
            wait_for(first_job, SWEEP_STOPS, proc)
            release.touch()
        code = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert code == 3, text[-3000:]
    assert_one_line(text, f"tracking.uri=sqlite:///{small_disk.path / 'mlflow.db'}: the disk holding")
    return text, "".join(p.read_text() for p in sorted((tmp_path / "sweep").glob("*/*.log")))


def assert_not_started(command: str, jobs: str, runs: dict[int, str]) -> None:
    """Jobs #1 and #2 (their runs named runs[job]) never logged an epoch, and each said in the
    jobs' logs, once, that it did not start."""
    for job, name in runs.items():
        assert f"{name}] epoch" not in command + jobs, f"trial {job + 1} trained"
        said = f"job #{job} not started: the sweep stopped on a full store (tracking.uri="
        assert len([line for line in jobs.splitlines() if said in line]) == 1, jobs[-3000:]


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_a_plain_sweep_starts_no_trial_after_its_store_fills(greenai, fashion_root, tmp_path, small_disk, launcher):
    db = small_disk.path / "mlflow.db"
    args = [
        "-m",
        "conv_layers=1,2,3",
        "device=cpu",
        *tiny_args(fashion_root, tmp_path / "cache", epochs=EPOCHS, batch_size=16),
        f"tracking.uri=sqlite:///{db}",
        *LAUNCHERS[launcher],
    ]
    command, jobs = fill_during_trial_1(greenai, args, small_disk, tmp_path, launcher in HELD, RUN.format(1))
    assert_not_started(command, jobs, {1: RUN.format(2), 2: RUN.format(3)})
    (run,) = trial_runs(runs_in(db))
    assert run.info.run_name == RUN.format(1), "the jobs not started opened no run"
    if launcher == "fused":
        lines = [line for line in command.splitlines() if "Launching 3 jobs" in line]
        assert lines and lines[0].endswith(
            "Launching 3 jobs: 3 one after another, not fused (fusion off on cpu: fuse=true to force)"
        ), lines


def test_a_plain_sweep_whose_folder_fills_ends_with_one_line(greenai, fashion_root, tmp_path, small_disk):
    """Hydra writes each job's files before the job starts: with the sweep folder's disk full,
    job #1's cannot be written. The sweep ends with greenai's one line, not Hydra's traceback,
    and the job logs cut short say so once."""
    folder = small_disk.path / "sweep"
    args = ["-m", "conv_layers=1,2,3", "device=cpu", *tiny_args(fashion_root, tmp_path / "cache", EPOCHS, 16)]
    log = tmp_path / "command.log"
    proc = greenai.start(*args, f"hydra.sweep.dir={folder}", log=log)
    wait_for(log, f"{RUN.format(1)}] epoch   2/", proc)
    small_disk.fill()
    code = proc.wait(timeout=300)
    text = log.read_text()
    assert code == 3, text[-3000:]
    assert_one_line(text, f"hydra.sweep.dir={folder}: the disk holding {folder}")
    assert len([line for line in text.splitlines() if "this job's log stops here" in line]) == 1, text[-3000:]
    assert f"{RUN.format(2)}] epoch" not in text and f"{RUN.format(3)}] epoch" not in text
    (run,) = trial_runs(runs_in(greenai.cwd / "mlflow.db"))
    assert run.info.status == "FINISHED" and run.info.run_name == RUN.format(1), "only the sweep folder is full"


def test_an_optuna_batch_over_joblib_fails_the_trials_not_started_as_interrupted(
    greenai, fashion_root, tmp_path, small_disk
):
    db = small_disk.path / "mlflow.db"
    args = [
        "-m",
        "searcher=grid",
        "conv_layers=choice(1,2,3)",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.n_jobs=3",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=3",
        "device=cpu",
        *tiny_args(fashion_root, tmp_path / "cache", epochs=EPOCHS, batch_size=16),
        f"tracking.uri=sqlite:///{db}",
    ]
    command, jobs = fill_during_trial_1(greenai, args, small_disk, tmp_path, True, "round1")
    assert_not_started(command, jobs, {1: "round2", 2: "round3"})
    first, *held = sorted(trials_in(greenai.cwd / "optuna.db"), key=lambda t: t.number)
    assert first.state.name == "FAIL" and first.user_attrs["failure_reason"].startswith("StoreFull: tracking.uri=")
    for trial in held:  # failed as interrupted: a resumed study runs their points again
        assert trial.state.name == "FAIL" and trial.user_attrs["interrupted"] is True, trial
        reason = trial.user_attrs["failure_reason"]
        assert reason.startswith("interrupted: SweepStopped: tracking.uri="), reason
    assert len(trial_runs(runs_in(db))) == 1, "the jobs not started opened no run"


def test_another_apps_task_function_runs_under_the_fused_launcher(tmp_path):
    """A Hydra app of the user's own that picks hydra/launcher=fused: its task function runs for
    every job, one after another, and one line says its jobs are not fused."""
    import subprocess
    import sys

    app = tmp_path / "my_app.py"
    app.write_text(
        textwrap.dedent(
            """
            from pathlib import Path

            import hydra

            from greenai.sweep.fused_launcher import register

            register()


            @hydra.main(config_path=None, config_name=None, version_base=None, execution_whitelist=["greenai.*"])
            def my_task(cfg):
                Path(f"ran-{cfg.x}").write_text(str(cfg.x * 2))
                return cfg.x * 2


            if __name__ == "__main__":
                my_task()
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, str(app), "-m", "hydra/launcher=fused", "+x=1,2,3", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-3000:]
    assert sorted(p.read_text() for p in tmp_path.glob("ran-*")) == ["2", "4", "6"], "the app's task ran for each job"
    said = [line for line in text.splitlines() if "is not greenai's trial" in line]
    assert len(said) == 1 and said[0].endswith(
        "hydra/launcher=fused: __main__.my_task is not greenai's trial, so its jobs run one after another, not fused"
    ), text[-3000:]
    assert not (tmp_path / "mlflow.db").exists(), "no greenai trial ran"


def test_the_stop_reaches_other_processes_when_the_full_disk_is_the_sweep_folders(small_disk, monkeypatch):
    """The mark a job leaves is read by a job of another process, even with the sweep folder on
    the full disk; a later sweep in the same folder starts unmarked; the sweep's end removes it."""
    import subprocess
    import sys

    from omegaconf import OmegaConf

    from greenai.stores import sweep_stop
    from greenai.sweep import full_stop

    monkeypatch.delenv(sweep_stop.SWEEP_ID_ENV, raising=False)  # restored after the test
    folder = small_disk.path / "sweep"
    config = OmegaConf.create({"hydra": {"runtime": {"cwd": "/"}, "sweep": {"dir": str(folder)}}})
    callback = full_stop.SweepStopCallback()
    callback.on_multirun_start(config)
    sweep_id = os.environ[sweep_stop.SWEEP_ID_ENV]
    small_disk.fill()
    line = f"hydra.sweep.dir={folder}: the disk holding {folder} is full (No space left on device)"
    job = "from greenai.stores import sweep_stop; from greenai.errors import StoreFull; import sys; "
    job += "sweep_stop.mark(StoreFull(sys.argv[1]), sys.argv[2])"
    subprocess.run([sys.executable, "-c", job, line, str(folder)], check=True, timeout=120)
    assert not any((folder / ".greenai").glob("*")), "the full disk holds no mark, not even an empty file"
    assert str(sweep_stop.stopped(folder)) == line, "read from this host's own place"
    with pytest.raises(sweep_stop.SweepStopped, match="^hydra.sweep.dir="):
        sweep_stop.check(str(folder), 1)
    callback.on_multirun_end(config)
    callback.on_multirun_start(config)
    assert sweep_stop.stopped(folder) is None, "a later sweep in the same folder starts unmarked"
    callback.on_multirun_end(config)
    monkeypatch.setenv(sweep_stop.SWEEP_ID_ENV, sweep_id)
    assert sweep_stop.stopped(folder) is None, "the sweep's end removed its marks"
