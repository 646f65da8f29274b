"""Beyond one machine: a real one-node Slurm (slurmctld, slurmd, slurmdbd, munge) and a real
PostgreSQL server, both started here on loopback by the scripts docs/sweeps.md documents."""

from __future__ import annotations

import os
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import REPO
from servers import as_root
from store_readers import by_state, energy_kept, mlflow_runs, optuna_trials, sweep_runs, trial_runs

# Under pytest-xdist one worker runs them all: the Slurm cluster and the PostgreSQL server are
# session fixtures on fixed paths, started once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("slurm-and-postgres")]


@pytest.fixture(scope="session")
def slurm():
    script = str(REPO / "scripts" / "local-slurm.sh")
    conf = as_root(script, "start").split("=", 1)[1]
    os.environ["SLURM_CONF"] = conf  # for sbatch, squeue and scancel, here and in the sweeps
    yield conf
    as_root(script, "stop")


@pytest.fixture(scope="session")
def postgres():
    script = str(REPO / "scripts" / "local-postgres.sh")
    yield as_root(script, "start")
    as_root(script, "stop")


SLURM = [
    "hydra/launcher=slurm",
    "hydra.launcher.partition=debug",
    "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=2",
]


def running_job(cwd: Path, proc: subprocess.Popen, log: Path, progress: str, batch: int = 1) -> str:
    """The Slurm id of this sweep's first job whose log shows `progress` (submitit keeps each
    job's log in .submitit/<id>/), once `batch` of its jobs show it: a scancel can only hit a
    job of this sweep, mid-training, and never one whose batch-mates are still starting (on a
    busy machine a job's start-up takes its time, and a batch-mate not yet started when the
    batch is lost is failed with it)."""
    deadline = time.monotonic() + 300
    while True:
        logs = [out for out in (cwd / "outputs").rglob(".submitit/*/*_log.out") if progress in out.read_text()]
        if len(logs) >= batch:
            return sorted(logs)[0].parent.name
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.5)


def test_a_sweep_runs_as_slurm_jobs_and_reports_like_a_local_one(greenai, tiny, slurm):
    greenai(
        "-m", *SLURM, "searcher=random", "space=paper3", "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2", *tiny
    )
    assert Counter(t.state.name for t in optuna_trials(greenai.cwd)) == {"COMPLETE": 4}
    runs = trial_runs(mlflow_runs(greenai.cwd))
    assert len(by_state(runs, "finished")) == 4
    for run in runs:
        assert run.data.tags["energy_source"] in ("measured", "estimated") and energy_kept(run)
        assert "epoch_energy_j" in run.data.metrics and run.data.params["adam.beta2"]
    assert len(list((greenai.cwd / "outputs").rglob(".submitit"))) == 1, "the jobs went through submitit"


def test_a_job_slurm_cancels_is_failed_and_the_sweep_goes_on(greenai, fashion_root, tmp_path, slurm):
    args = [
        "-m",
        *SLURM,
        "searcher=random",
        "space=paper3",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.n_jobs=2",
        f"dataset.root={fashion_root}",
        f"dataset.cache_dir={tmp_path / 'cache'}",
        "batch_size=8",
        "epochs=40",
    ]
    log = tmp_path / "sweep.log"
    proc = greenai.start(*args, log=log)
    job = running_job(greenai.cwd, proc, log, "epoch   2/40", batch=2)
    subprocess.run(["scancel", job], check=True)
    assert proc.wait(timeout=900) == 0, log.read_text()[-3000:]
    assert "the launcher lost a job" in log.read_text()
    states = Counter(t.state.name for t in optuna_trials(greenai.cwd))
    assert states["COMPLETE"] == 3 and states["FAIL"] == 1 and not states["RUNNING"], states
    runs = trial_runs(mlflow_runs(greenai.cwd))
    assert not [r for r in runs if r.info.status == "RUNNING"] and len(by_state(runs, "finished")) == 3


def test_a_job_that_times_out_is_failed_and_the_sweep_goes_on(greenai, fashion_root, tmp_path, slurm):
    # A two-minute limit the 100000-epoch point cannot meet (Slurm may signal up to a minute
    # before its time, so the limit leaves the 1-epoch point room to finish).
    args = [
        "-m",
        *SLURM,
        "searcher=grid",
        "epochs=choice(1,100000)",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.max_failure_rate=1.0",
        "hydra.launcher.timeout_min=2",
        "hydra.launcher.signal_delay_s=10",
        f"dataset.root={fashion_root}",
        f"dataset.cache_dir={tmp_path / 'cache'}",
        "batch_size=8",
    ]
    log = tmp_path / "sweep.log"
    proc = greenai.start(*args, log=log)
    assert proc.wait(timeout=900) == 0, log.read_text()[-3000:]
    trials = optuna_trials(greenai.cwd)
    assert [t.params["epochs"] for t in trials if t.state.name == "COMPLETE"] == [1]
    assert {t.params["epochs"] for t in trials if t.state.name == "FAIL"} == {100000}
    assert not [t for t in trials if t.state.name == "RUNNING"]
    runs = trial_runs(mlflow_runs(greenai.cwd))
    assert not [r for r in runs if r.info.status == "RUNNING"], "the timed-out run is closed"


def test_workers_on_several_processes_share_a_postgresql_study(greenai, tiny, tmp_path, postgres):
    study = f"pg-{os.getpid()}-{time.monotonic_ns()}"
    args = [
        "-m",
        "searcher=random",
        "space=paper3",
        f"sweep.study_name={study}",
        f"sweep.storage={postgres}",
        "hydra.sweeper.n_trials=12",
        *tiny,
    ]
    logs = [tmp_path / f"worker{i}.log" for i in range(3)]
    procs = [greenai.start(*args, log=log) for log in logs]
    assert [p.wait(timeout=900) for p in procs] == [0, 0, 0], [log.read_text()[-2000:] for log in logs]
    import optuna

    trials = optuna.load_study(study_name=study, storage=postgres).get_trials(deepcopy=False)
    assert Counter(t.state.name for t in trials) == {"COMPLETE": 12}
    points = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(points)) == 12, "no duplicates"
    runs = trial_runs(mlflow_runs(greenai.cwd))
    assert len(by_state(runs, "finished")) == 12 and len(sweep_runs(mlflow_runs(greenai.cwd))) == 1
    assert all("greenai:greenai@" not in log.read_text() for log in logs), "the password never reaches the console"


def test_workers_share_a_journal_file_study(greenai, tiny, tmp_path):
    args = [
        "-m",
        "searcher=random",
        "space=paper3",
        "sweep.study_name=journal",
        f"sweep.storage=journal://{tmp_path / 'study.log'}",
        "hydra.sweeper.n_trials=8",
        *tiny,
    ]
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    procs = [greenai.start(*args, log=log) for log in logs]
    assert [p.wait(timeout=900) for p in procs] == [0, 0], [log.read_text()[-2000:] for log in logs]
    import optuna
    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(tmp_path / "study.log")))
    trials = optuna.load_study(study_name="journal", storage=storage).get_trials(deepcopy=False)
    assert Counter(t.state.name for t in trials) == {"COMPLETE": 8}
