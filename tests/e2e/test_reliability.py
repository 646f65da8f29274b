"""Faults injected into real sweeps: processes killed (SIGKILL, SIGTERM, SIGINT), workers
killed, energy counters failing, many writers on one store. The assertions read the MLflow
and Optuna stores back and count runs and trials by state."""

from __future__ import annotations

import os
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from datasets_on_disk import tiny_args
from store_readers import by_state, energy_kept, mlflow_runs, optuna_trials, sweep_runs, trial_runs
from waiting import wait_for

pytestmark = pytest.mark.slow


def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def assert_complete_and_clean(work: Path, n_trials: int) -> None:
    trials = optuna_trials(work)
    states = Counter(t.state.name for t in trials)
    assert states["COMPLETE"] == n_trials and not states["RUNNING"] and not states["WAITING"], states
    points = [tuple(sorted(t.params.items())) for t in trials if t.state.name == "COMPLETE"]
    assert len(set(points)) == n_trials, "a resumed study runs each point once (a grid numbers its points alike)"
    runs = trial_runs(mlflow_runs(work))
    assert not [r for r in runs if r.info.status == "RUNNING"], "no run is left RUNNING"
    finished = by_state(runs, "finished")
    assert len(finished) == n_trials
    assert max(Counter(r.data.tags["optuna.trial_number"] for r in finished).values()) == 1, "no trial finished twice"
    assert len(sweep_runs(mlflow_runs(work))) == 1, "one parent run for the study"


SWEEP = [
    "-m",
    "searcher=grid",
    "lr=choice(0.001,0.002,0.003,0.004,0.005,0.006)",
    "hydra.sweeper.n_trials=6",
    "epochs=6",
    "batch_size=16",
]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_closes_the_running_trial_cleanly_and_the_rerun_completes(greenai, fashion_root, tmp_path, sig):
    args = [*SWEEP, f"dataset.root={fashion_root}", f"dataset.cache_dir={tmp_path / 'cache'}"]
    log = tmp_path / "first.log"
    proc = greenai.start(*args, log=log)
    wait_for(log, "round3] epoch   2/6", proc)
    proc.send_signal(sig)
    assert proc.wait(timeout=120) != 0
    runs = trial_runs(mlflow_runs(greenai.cwd))
    (killed,) = [r for r in runs if r.data.tags["greenai.round"] == "3"]
    assert killed.info.status == "KILLED" and killed.data.tags["greenai.trial_state"] == "killed"
    assert energy_kept(killed) and 2 <= killed.data.metrics["epochs_run"] < 6, "the energy spent is logged"
    (interrupted,) = [t for t in optuna_trials(greenai.cwd) if t.number == 2]
    assert interrupted.state.name == "FAIL" and interrupted.user_attrs["interrupted"] is True
    (sweep,) = sweep_runs(mlflow_runs(greenai.cwd))
    assert sweep.info.status == "KILLED"
    greenai(*args)
    assert_complete_and_clean(greenai.cwd, 6)
    retried = [t for t in optuna_trials(greenai.cwd) if t.user_attrs.get("retry_of") == 2]
    assert len(retried) == 1 and retried[0].state.name == "COMPLETE", "the interrupted grid point ran again"


def test_sigkill_of_the_main_process_mid_trial(greenai, fashion_root, tmp_path):
    args = [*SWEEP, f"dataset.root={fashion_root}", f"dataset.cache_dir={tmp_path / 'cache'}"]
    log = tmp_path / "first.log"
    proc = greenai.start(*args, log=log)
    wait_for(log, "round4] epoch   1/6", proc)
    proc.kill()
    proc.wait()
    stale = [t for t in optuna_trials(greenai.cwd) if t.state.name == "RUNNING"]
    assert len(stale) == 1, "SIGKILL leaves the running trial RUNNING until the rerun"
    greenai(*args)
    assert_complete_and_clean(greenai.cwd, 6)
    runs = trial_runs(mlflow_runs(greenai.cwd))
    assert len([r for r in runs if r.info.status == "KILLED"]) == 1


def test_sigkill_of_a_worker(greenai, fashion_root, tmp_path):
    args = [
        "-m",
        "searcher=random",
        "space=paper3",
        "hydra.sweeper.n_trials=6",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "hydra.sweeper.n_jobs=2",
        *tiny_args(fashion_root, tmp_path / "cache", epochs=6, batch_size=16),
    ]
    log = tmp_path / "first.log"
    proc = greenai.start(*args, log=log)
    wait_for(log, "round3] epoch   1/6", proc)
    workers = [
        c
        for c in children(proc.pid)
        if "greenai.train" in Path(f"/proc/{c}/cmdline").read_text() or "loky" in Path(f"/proc/{c}/cmdline").read_text()
    ]
    assert workers, "joblib's workers are children of the sweep"
    os.kill(workers[0], signal.SIGKILL)
    proc.wait(timeout=300)
    greenai(*args)
    assert_complete_and_clean(greenai.cwd, 6)


def test_four_joblib_workers_record_forty_trials_once(greenai, tiny):
    greenai(
        "-m",
        "searcher=random",
        "space=paper3",
        "hydra.sweeper.n_trials=40",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=4",
        "hydra.sweeper.n_jobs=4",
        *tiny,
        timeout=1200,
    )
    assert_complete_and_clean(greenai.cwd, 40)


def test_four_independent_processes_on_one_study_stop_at_exactly_n_trials(greenai, tiny, tmp_path):
    args = ["-m", "searcher=random", "space=paper3", "sweep.study_name=shared", "hydra.sweeper.n_trials=40", *tiny]
    logs = [tmp_path / f"worker{i}.log" for i in range(4)]
    procs = [greenai.start(*args, log=log) for log in logs]
    codes = [p.wait(timeout=1200) for p in procs]
    assert codes == [0, 0, 0, 0], [log.read_text()[-2000:] for log in logs]
    assert_complete_and_clean(greenai.cwd, 40)
    text = "".join(log.read_text() for log in logs)
    assert "database is locked" not in text
    points = [tuple(sorted(t.params.items())) for t in optuna_trials(greenai.cwd)]
    assert len(set(points)) == len(points), "workers joining a study do not replay each other's points"


# Loaded into each worker (Python imports a sitecustomize module found on its path at start):
# a worker that holds one of its stores' locks (asking trials happens under the study's) reads the
# study's trials two seconds slower, as on a machine where every process is slow, so other
# workers' trials finish while it decides how many trials to ask (the workers waiting for the
# lock keep it held most of the time).
SLOW_UNDER_THE_LOCK = """
import contextlib
import time

from greenai.stores.url import StoreURL
from greenai.stores.waiting_storage import PatientStorage

lock, read, held = StoreURL.lock, PatientStorage.get_all_trials, []


@contextlib.contextmanager
def noted_lock(self, *args, **kwargs):
    with lock(self, *args, **kwargs):
        held.append(True)
        try:
            yield
        finally:
            held.pop()


def slow_read(self, *args, **kwargs):
    trials = read(self, *args, **kwargs)
    if held:
        time.sleep(2.0)
    return trials


StoreURL.lock, PatientStorage.get_all_trials = noted_lock, slow_read
"""


def test_four_slow_processes_on_one_study_never_start_more_than_n_trials(greenai, tiny, tmp_path):
    slow = tmp_path / "slow"
    slow.mkdir()
    (slow / "sitecustomize.py").write_text(SLOW_UNDER_THE_LOCK)
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(slow), os.environ.get("PYTHONPATH")) if p)}
    args = ["-m", "searcher=random", "space=paper3", "sweep.study_name=slow", "hydra.sweeper.n_trials=8", *tiny]
    logs = [tmp_path / f"worker{i}.log" for i in range(4)]
    procs = [greenai.start(*args, log=log, extra_env=env) for log in logs]
    codes = [p.wait(timeout=900) for p in procs]
    assert codes == [0, 0, 0, 0], [log.read_text()[-2000:] for log in logs]
    states = Counter(t.state.name for t in optuna_trials(greenai.cwd))
    assert states["COMPLETE"] == 8 and not states["RUNNING"] and not states["WAITING"], states
    assert len(by_state(trial_runs(mlflow_runs(greenai.cwd)), "finished")) == 8, "no surplus trial was trained"


def test_energy_counters_failing_mid_run_fall_back_and_label_the_run_partial(tmp_path, fashion_root, monkeypatch):
    """Zeus reads the first epoch's windows, then its counter stops answering: the trial goes
    on, the unread windows are estimated, and the run says `partial`."""
    import contextlib

    from fake_zeus import RAPLCPUs, install
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from greenai.energy import meters as energy
    from greenai.train import CONF_DIR, train
    from greenai.training import loop

    class FlakyRAPL(RAPLCPUs):
        """RAPL that answers until the trial's first epoch is recorded, then fails (however
        many windows greenai opened before it: start-up, warm-up, the run's opening)."""

        broken = False

        def get_total_energy_consumption(self, index):
            if FlakyRAPL.broken:
                raise RuntimeError("RAPL counter read failed")
            return super().get_total_energy_consumption(index)

    real_window = loop.window

    @contextlib.contextmanager
    def window_then_break(meter, name):
        with real_window(meter, name) as measured:
            yield measured
        FlakyRAPL.broken = FlakyRAPL.broken or name == "records"  # the first epoch is done

    monkeypatch.setattr(loop, "window", window_then_break)
    install(monkeypatch, cpus=FlakyRAPL())
    monkeypatch.chdir(tmp_path)
    energy._METERS.clear()
    with initialize_config_dir(config_dir=CONF_DIR):
        cfg = compose(
            config_name="config",
            return_hydra_config=True,
            overrides=[
                f"dataset.root={fashion_root}",
                f"dataset.cache_dir={tmp_path}/c",
                "epochs=3",
                "energy=zeus",
                "energy.idle_seconds=0",
            ],
        )
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(tmp_path / "out")
        cfg.hydra.runtime.cwd = str(tmp_path)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    try:
        accuracy = train(cfg)
    finally:
        energy._METERS.clear()
    (run,) = mlflow_runs(tmp_path)
    assert run.info.status == "FINISHED" and accuracy == run.data.metrics["accuracy"]
    assert run.data.tags["energy_source"] == "partial"
    assert run.data.metrics["epochs_run"] == 3 and run.data.metrics["energy_j"] > 0


def test_a_single_run_killed_by_sigkill_is_closed_by_the_next_command_on_its_store(greenai, fashion_root, tmp_path):
    args = [f"dataset.root={fashion_root}", f"dataset.cache_dir={tmp_path / 'cache'}", "batch_size=16"]
    log = tmp_path / "run.log"
    proc = greenai.start(*args, "epochs=30", log=log)
    wait_for(log, "epoch   2/30", proc)
    proc.kill()
    proc.wait()
    (left,) = trial_runs(mlflow_runs(greenai.cwd))
    assert left.info.status == "RUNNING", "SIGKILL leaves no chance to close it"
    greenai(*args, "epochs=1")
    first, second = trial_runs(mlflow_runs(greenai.cwd))
    assert first.info.status == "KILLED" and first.data.tags["greenai.trial_state"] == "killed"
    assert "process ended" in first.data.tags["greenai.failure_reason"]
    assert second.info.status == "FINISHED"
