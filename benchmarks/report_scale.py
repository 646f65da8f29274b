"""Benchmark: `python -m greenai.report` on an experiment of 10,000 trial runs.

    python benchmarks/report_scale.py [--runs 10000] [--sweeps 20] [--epochs 25] [--store DIR]

Builds an MLflow sqlite store shaped like greenai's own (sweeps as parent runs with nested
trial runs; per trial ~70 params, ~40 tags, 28 metrics and their per-epoch history; finished,
pruned, failed and killed trials), then times, in this one invocation:

- the baseline: one paginated `search_runs` over the experiment, which is how the report read
  its runs before it kept a cache (`tracking.all_runs`);
- the report with its cache off (`report.cache=false`): every run read, as before;
- the first report (no cache yet: every run read, the cache written beside report.md);
- a repeated report with nothing changed;
- a repeated report after some runs finished and some were deleted (as during a live sweep).

Each report is the real command in a fresh process, so its time includes the command's start-up
(Python, MLflow, Hydra and the plugins Hydra loads), also timed alone (`--cfg job`). It prints
seconds and each time as a ratio of the baseline, and checks that every report counted exactly
the trial runs the store holds and that a repeated report equals the first (`--check`: and that
the last one equals a report that reads every run).
Target (issue 10): first report <= 30 s, repeated report <= 5 s at 10,000 runs.

`--store DIR` keeps the built store in DIR and reuses it on the next invocation with the same
sizes; the timed reports always run on a fresh copy of it, so the store in DIR stays as built.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

EXPERIMENT = "greenai"
MODELS = {"simplecnn": 52_000, "densepoly": 310_000, "denselinear": 1_100_000}  # name: typical parameter count
DATASETS = {"fashion_mnist": (1, 28), "cifar10": (3, 32)}
SEARCHERS = ("random", "grid", "bayes", "tpe")
EPOCH_METRICS = (
    "train_loss",
    "test_loss",
    "test_accuracy",
    "epoch_seconds",
    "epoch_energy_j",
    "epoch_gpu_energy_j",
    "epoch_cpu_energy_j",
    "eval_seconds_epoch",
    "eval_energy_j_epoch",
    "epoch_net_energy_j",
)
VERSIONS = {
    "python": "3.11.2",
    "greenai": "0.1.0",
    "torch": "2.4.1",
    "torchvision": "0.19.1",
    "zeus": "0.16.0",
    "mlflow": "3.17.2",
    "hydra-core": "1.4.0rc3",
    "optuna": "4.5.0",
}
CHUNK = 500  # runs per insert batch: bounded memory at any size
MAX_EPOCH_S = 5.0


@dataclass(frozen=True)
class Shape:
    runs: int
    sweeps: int
    epochs: int
    seed: int = 1234
    generator: int = 2  # bumped when the runs built change, so that a kept store is rebuilt


# ------------------------------------------------------------------ what one run holds


@dataclass
class RunSpec:
    run_id: str
    name: str
    status: str
    start_ms: int
    end_ms: int
    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[str, float]
    history: list[tuple[str, float, int, int]]  # (key, value, timestamp, step): per-epoch metrics


@dataclass(frozen=True)
class SweepSpec:
    index: int
    model: str
    dataset: str
    searcher: str
    space: str
    trials: int

    @property
    def study(self) -> str:
        return f"{self.model}-{self.dataset}-{self.searcher}-{self.space}-{self.index:03d}"


def sweep_specs(shape: Shape) -> list[SweepSpec]:
    per, extra = divmod(shape.runs, shape.sweeps)
    combos = [(m, d, s, sp) for m in MODELS for d in DATASETS for s in SEARCHERS for sp in ("paper3", "paper5")]
    # A stride prime to the 48 combinations: consecutive sweeps differ in model, dataset and searcher.
    return [SweepSpec(i, *combos[i * 7 % len(combos)], per + (1 if i < extra else 0)) for i in range(shape.sweeps)]


def trial_params(
    sweep: SweepSpec, rnd: random.Random, conv: int, linear: int, relu: bool, lr: float
) -> dict[str, object]:
    """The config flattened, the architecture summary and what Adam holds, as greenai logs them."""
    channels, side = DATASETS[sweep.dataset]
    beta1, beta2 = rnd.uniform(0.5, 0.99), rnd.uniform(0.9, 0.9999)
    arch_params = int(MODELS[sweep.model] * (1 + conv) * linear / 6)
    return {
        "model.name": sweep.model,
        "dataset.name": sweep.dataset,
        "dataset.channels": channels,
        "dataset.height": side,
        "dataset.width": side,
        "dataset.mean": [0.286] * channels,
        "dataset.std": [0.353] * channels,
        "dataset.root": None,
        "dataset.cache_dir": "~/.cache/greenai/data",
        "dataset.download": True,
        "dataset.train_size": None,
        "dataset.test_size": None,
        "dataset.subset_seed": 0,
        "energy.backend": "auto",
        "energy.watts_per_cpu_core": 10.0,
        "energy.idle_seconds": 3.0,
        "tracking.uri": "sqlite:///mlflow.db",
        "tracking.experiment": EXPERIMENT,
        "sweep.storage": "sqlite:///optuna.db",
        "sweep.study_name": sweep.study,
        "sweep.trial_number": None,
        "sweep.energy_budget_kj": None,
        "sweep.target_accuracy": None,
        "sweep.trials_per_gpu": 1,
        "sweep.pruner._target_": "optuna.pruners.MedianPruner",
        "sweep.pruner.n_startup_trials": 5,
        "sweep.pruner.n_warmup_steps": 2,
        "sweep.pruner.interval_steps": 1,
        "sweep.pruner.n_min_trials": 1,
        "objective.name": "accuracy",
        "objective.directions": ["maximize"],
        "conv_layers": conv,
        "linear_layers": linear,
        "relu": relu,
        "epochs": 25,
        "batch_size": 512,
        "seed": 1234,
        "repeats": 1,
        "lr": lr,
        "beta1": beta1,
        "beta2": beta2,
        "eps": 1e-8,
        "weight_decay": 0.0,
        "device": "auto",
        "arch.params": arch_params,
        "arch.macs_per_sample": arch_params * 9,
        "arch.n_conv2d": conv,
        "arch.n_batchnorm2d": conv,
        "arch.n_relu": conv if relu else 0,
        "arch.n_maxpool2d": conv,
        "arch.n_linear": linear,
        "arch.n_flatten": 1,
        "arch.n_sequential": 2,
        "arch.input_shape": [channels, side, side],
        "arch.output_features": 10,
        "arch.conv_channels": [3 ** (d + 1) for d in range(conv)],
        "arch.linear_widths": [784 // 2 ** (d + 1) for d in range(linear - 1)],
        "adam.lr": lr,
        "adam.beta1": beta1,
        "adam.beta2": beta2,
        "adam.eps": 1e-8,
        "adam.weight_decay": 0.0,
        "adam.amsgrad": False,
        "adam.foreach": None,
        "adam.maximize": False,
        "adam.capturable": False,
        "adam.differentiable": False,
        "adam.fused": None,
        "space.name": sweep.space,
        "searcher.name": sweep.searcher,
        "hydra.sweeper.n_trials": sweep.trials,
        "hydra.sweeper.n_jobs": 1,
        "hydra.sweeper.grid_points": 5,
        "hydra.sweeper.max_failure_rate": 0.5,
    }


def trial_tags(sweep: SweepSpec, parent_id: str, name: str, number: int, state: str) -> dict[str, object]:
    sweep_dir = f"/home/greenai/outputs/multirun/2026-01-{1 + sweep.index % 28:02d}/10-00-00"
    tags = {
        "greenai.run_kind": "trial",
        "greenai.trial_state": state,
        "greenai.owner": f"node{sweep.index % 4}:{4000 + number}",
        "energy_source": "measured",
        "energy_device": "NVIDIA H100 (NVML) + RAPL package and DRAM",
        "idle_source": "measured",
        "device": "NVIDIA H100 80GB HBM3",
        "dataset_files": "/usr/share/datasets/fashion-mnist",
        "hydra.output_dir": f"{sweep_dir}/{number}",
        "hydra.job_num": number,
        "hydra.sweep_dir": sweep_dir,
        "greenai.round": number + 1,
        "greenai.searcher": sweep.searcher,
        "optuna.trial_number": number,
        "greenai.study_name": sweep.study,
        "mlflow.parentRunId": parent_id,
        "mlflow.runName": name,
        "mlflow.user": "greenai",
        "mlflow.source.name": "greenai/train.py",
        "mlflow.source.type": "LOCAL",
        "mlflow.source.git.commit": "6ae38ee3c9d2f1b7a5e4c0d8b2a1f3e5d7c9b0a1",
        "mlflow.source.git.branch": "main",
        "mlflow.source.git.repoURL": "https://example.org/greenai.git",
        "slurm.job_id": 100_000 + sweep.index,
        "slurm.array_task_id": number,
        "slurm.partition": "gpu",
        "host": f"node{sweep.index % 4}",
        "cuda.driver": "550.54.15",
        "cuda.runtime": "12.4",
        "greenai.packed": "false",
        "mlflow.note.content": f"{sweep.model} on {sweep.dataset}, round {number + 1} of {sweep.study}",
        **{f"versions.{k}": v for k, v in VERSIONS.items()},
    }
    if state in ("failed", "killed"):
        tags["greenai.failure_reason"] = (
            "RuntimeError: CUDA out of memory" if state == "failed" else "stopped by SIGTERM"
        )
    return tags


def trial_run(sweep: SweepSpec, parent_id: str, number: int, start_ms: int, rnd: random.Random, epochs: int) -> RunSpec:
    conv, linear, relu = rnd.randint(1, 4), rnd.randint(3, 7), rnd.random() < 0.5
    lr = 10 ** rnd.uniform(-5, -1)
    draw = rnd.random()
    state = "finished" if draw < 0.80 else "pruned" if draw < 0.92 else "failed" if draw < 0.97 else "killed"
    status = {"finished": "FINISHED", "pruned": "FINISHED", "failed": "FAILED", "killed": "KILLED"}[state]
    ran = epochs if state == "finished" else rnd.randint(1, max(1, epochs - 1))
    lr_miss = abs(math.log10(lr) + 3)  # decades away from 1e-3
    accuracy = min(
        0.95,
        max(0.1, 0.78 + 0.02 * conv - 0.004 * linear + (0.01 if relu else 0) - 0.03 * lr_miss**2 + rnd.gauss(0, 0.01)),
    )
    watts, idle_w = 250 + 40 * conv + rnd.gauss(0, 10), 60.0
    epoch_s = min(MAX_EPOCH_S, max(1.0, 2.0 + 0.5 * conv + 0.1 * linear + rnd.gauss(0, 0.1)))
    history, t = [], start_ms
    for step in range(ran):
        t += int(epoch_s * 1000)
        acc = accuracy * (1 - 0.5 ** (step + 1))
        values = (
            1.5 * 0.8**step,
            1.6 * 0.8**step,
            acc,
            epoch_s,
            watts * epoch_s,
            0.8 * watts * epoch_s,
            0.2 * watts * epoch_s,
            0.3,
            watts * 0.3,
            (watts - idle_w) * epoch_s,
        )
        history += [(k, float(v), t, step) for k, v in zip(EPOCH_METRICS, values, strict=True)]
    train_s, eval_s = epoch_s * ran, 0.3 * ran
    train_j, eval_j = watts * train_s, watts * eval_s
    metrics = {
        "accuracy": accuracy if state in ("finished", "pruned") else None,
        "epochs_run": ran,
        "repeats_run": 1,
        "train_seconds": train_s,
        "eval_seconds": eval_s,
        "busy_seconds": train_s + eval_s,
        "train_energy_j": train_j,
        "eval_energy_j": eval_j,
        "energy_j": train_j + eval_j,
        "gpu_energy_j": 0.8 * (train_j + eval_j),
        "cpu_energy_j": 0.2 * (train_j + eval_j),
        "energy_per_train_sample_j": train_j / (60_000 * ran),
        "idle_power_w": idle_w,
        "train_net_energy_j": train_j - idle_w * train_s,
        "net_energy_j": train_j + eval_j - idle_w * (train_s + eval_s),
        "arch_params": MODELS[sweep.model] * conv,
        "arch_macs_per_sample": MODELS[sweep.model] * conv * 9,
    }
    name = f"{sweep.model}-c{conv}-l{linear}-r{int(relu)}-{number}"
    return RunSpec(
        uuid.uuid4().hex,
        name,
        status,
        start_ms,
        t + 500,
        _strings(trial_params(sweep, rnd, conv, linear, relu, lr)),
        _strings(trial_tags(sweep, parent_id, name, number, state)),
        {k: float(v) for k, v in metrics.items() if v is not None},
        history,
    )


def sweep_run(sweep: SweepSpec, run_id: str, start_ms: int, end_ms: int, trials: list[RunSpec]) -> RunSpec:
    energies = [t.metrics["energy_j"] for t in trials]
    tags = {
        "greenai.run_kind": "sweep",
        "greenai.trial_state": "finished",
        "greenai.searcher": sweep.searcher,
        "greenai.study_name": sweep.study,
        "greenai.search_space": "beta1,conv_layers,linear_layers,lr,relu",
        "hydra.sweeper": "greenai.sweep.sweeper.GreenOptunaSweeper",
        "energy_source": "measured",
        "greenai.command": f"searcher={sweep.searcher} space={sweep.space} model={sweep.model} dataset={sweep.dataset}",
        "mlflow.runName": f"sweep-{sweep.study}",
        "mlflow.user": "greenai",
    }
    metrics = {
        "sweep_trials": len(trials),
        "sweep_energy_j": sum(energies),
        "sweep_seconds": (end_ms - start_ms) / 1000,
    }
    return RunSpec(run_id, f"sweep-{sweep.study}", "FINISHED", start_ms, end_ms, {}, _strings(tags), metrics, [])


def _strings(values: dict[str, object]) -> dict[str, str]:
    return {k: str(v) for k, v in values.items()}


def generate(shape: Shape, now_ms: int) -> Iterator[list[RunSpec]]:
    """The runs, a sweep (its parent first, then its trials) at a time. The sweeps ran one after
    another and all ended at least an hour before `now_ms`, as an experiment reported on later."""
    rnd = random.Random(shape.seed)
    longest_trial_ms = int((shape.epochs * (MAX_EPOCH_S + 0.3) + 1.5) * 1000)
    clock = now_ms - shape.runs * longest_trial_ms - 3_600_000
    for sweep in sweep_specs(shape):
        parent_id, start, trials = uuid.uuid4().hex, clock, []
        for number in range(sweep.trials):
            trials.append(trial_run(sweep, parent_id, number, clock, rnd, shape.epochs))
            clock = trials[-1].end_ms + 1000
        yield [sweep_run(sweep, parent_id, start, clock, trials), *trials]


# ------------------------------------------------------------------ writing the store


def build_store(db: Path, shape: Shape) -> float:
    """Create the store through MLflow (schema, migrations, experiment), then insert the runs
    in bulk through MLflow's own table definitions: the same rows `create_run`, `log_batch` and
    `set_terminated` write, about 100 times faster than one `log_batch` round trip per run."""
    from mlflow import MlflowClient
    from sqlalchemy import create_engine, event

    started = time.perf_counter()
    uri = f"sqlite:///{db}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment(EXPERIMENT, artifact_location=(db.parent / "mlruns").as_uri())
    artifacts = client.get_experiment(experiment_id).artifact_location
    engine = create_engine(uri)
    # A scratch store rebuilt on demand: no need to survive a power cut while it is written.
    event.listen(engine, "connect", lambda conn, _: conn.execute("PRAGMA synchronous=OFF"))
    batch: list[RunSpec] = []
    for sweep in generate(shape, int(time.time() * 1000)):
        batch += sweep
        if len(batch) >= CHUNK:
            insert_runs(engine, int(experiment_id), artifacts, batch)
            batch = []
    insert_runs(engine, int(experiment_id), artifacts, batch)
    engine.dispose()
    return time.perf_counter() - started


def insert_runs(engine, experiment_id: int, artifacts: str, runs: list[RunSpec]) -> None:
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlParam, SqlRun, SqlTag

    if not runs:
        return
    rows = {
        SqlRun: [
            dict(
                run_uuid=r.run_id,
                name=r.name,
                source_type="UNKNOWN",
                source_name="",
                entry_point_name="",
                user_id="greenai",
                status=r.status,
                start_time=r.start_ms,
                end_time=r.end_ms,
                deleted_time=None,
                source_version="",
                lifecycle_stage="active",
                artifact_uri=f"{artifacts}/{r.run_id}/artifacts",
                experiment_id=experiment_id,
            )
            for r in runs
        ],
        SqlTag: [dict(key=k, value=v, run_uuid=r.run_id) for r in runs for k, v in r.tags.items()],
        SqlParam: [dict(key=k, value=v, run_uuid=r.run_id) for r in runs for k, v in r.params.items()],
        SqlMetric: [
            dict(key=k, value=v, timestamp=ts, step=step, is_nan=False, run_uuid=r.run_id)
            for r in runs
            for k, v, ts, step in r.history
        ]
        + [
            dict(key=k, value=v, timestamp=r.end_ms, step=0, is_nan=False, run_uuid=r.run_id)
            for r in runs
            for k, v in r.metrics.items()
        ],
        SqlLatestMetric: [
            dict(key=k, value=v, timestamp=ts, step=step, is_nan=False, run_uuid=r.run_id)
            for r in runs
            for k, (v, ts, step) in _latest(r).items()
        ],
    }
    with engine.begin() as conn:
        for model, values in rows.items():
            if values:
                conn.execute(model.__table__.insert(), values)


def _latest(run: RunSpec) -> dict[str, tuple[float, int, int]]:
    """What MLflow keeps as a metric's latest value: the one at the highest step."""
    latest = {k: (v, ts, step) for k, v, ts, step in run.history}
    latest.update({k: (v, run.end_ms, 0) for k, v in run.metrics.items()})
    return latest


def stored(store: Path | None, shape: Shape) -> tuple[Path, str]:
    """The pristine store for `shape`: reused from `store` if it was built there with the same
    shape, else built (there, or in a scratch folder)."""
    folder = store or Path(tempfile.mkdtemp(prefix="greenai-report-store-"))
    folder.mkdir(parents=True, exist_ok=True)
    db, stamp = folder / "mlflow.db", folder / "shape.json"
    if db.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == asdict(shape):
        return db, f"reused from {folder}"
    stamp.unlink(missing_ok=True)
    # Built under a name of its own, then moved into place: MLflow keeps one engine per store URI
    # in a process, which would still see a store deleted and rebuilt at the same path.
    building = folder / f"building-{uuid.uuid4().hex}.db"
    seconds = build_store(building, shape)
    os.replace(building, db)
    stamp.write_text(json.dumps(asdict(shape)))
    return db, f"built in {seconds:.1f} s"


# ------------------------------------------------------------------ timing


def timed_search(db: Path, paused: bool) -> tuple[float, int]:
    """One paginated `search_runs` over the experiment (`tracking.all_runs`, as the report read its
    runs before it kept a cache), optionally with the garbage collector paused as the report now
    does; in this process, so Python's start-up and imports are not counted."""
    from mlflow import MlflowClient

    from greenai.report.run_cache import collector_paused
    from greenai.stores.tracking import all_runs

    client = MlflowClient(f"sqlite:///{db}")
    experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    client.search_runs([experiment_id], max_results=1)  # one-time set-up (SQLAlchemy's mappers) not timed
    started = time.perf_counter()
    if paused:
        with collector_paused():
            count = len(all_runs(client, experiment_id))
    else:
        count = len(all_runs(client, experiment_id))
    return time.perf_counter() - started, count


def report(work: Path, *args: str) -> float:
    """`python -m greenai.report ARGS` in `work`, as a user types it; its wall time in seconds."""
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "greenai.report", *args],
        cwd=work,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    if proc.returncode != 0:
        sys.exit(f"report failed ({proc.returncode}): {' '.join(args)}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - started


def trials_counted(work: Path, out_dir: str = "reports/greenai") -> int:
    """The trial runs a report says it read (its "N trial runs read: ..." line)."""
    text = (work / out_dir / "report.md").read_text()
    return int(re.search(r"^(\d+) trial runs read:", text, flags=re.MULTILINE).group(1))


def live_changes(db: Path, shape: Shape, finished: int, deleted: int) -> int:
    """What a live sweep does between two reports, through MLflow's public API: `finished` trials
    run and end, one more starts and is still running, and `deleted` trials are deleted. Returns
    the change in the number of trial runs."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    client = MlflowClient(f"sqlite:///{db}")
    experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    parent = client.search_runs([experiment_id], "tags.`greenai.run_kind` = 'sweep'", max_results=1)[0]
    sweep = sweep_specs(shape)[0]
    rnd = random.Random(shape.seed + 1)
    for number in range(finished + 1):
        spec = trial_run(sweep, parent.info.run_id, sweep.trials + number, int(time.time() * 1000), rnd, shape.epochs)
        run_id = client.create_run(experiment_id, run_name=spec.name, tags=spec.tags).info.run_id
        metrics = [Metric(k, v, ts, step) for k, v, ts, step in spec.history]
        metrics += [Metric(k, v, int(time.time() * 1000), 0) for k, v in spec.metrics.items()]
        client.log_batch(run_id, metrics=metrics, params=[Param(k, v) for k, v in spec.params.items()])
        if number < finished:
            client.set_terminated(run_id, spec.status)
        else:
            client.set_tag(run_id, "greenai.trial_state", "running")
    gone = client.search_runs([experiment_id], "tags.`greenai.run_kind` = 'trial'", max_results=deleted)
    for run in gone:
        client.delete_run(run.info.run_id)
    return finished + 1 - len(gone)


def shape_line(db: Path, shape: Shape, how: str) -> str:
    """What the store holds, read back from it: one trial run's params, tags and metrics."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    trial = client.search_runs([experiment_id], "tags.`greenai.run_kind` = 'trial'", max_results=1)[0]
    history = len(client.get_metric_history(trial.info.run_id, "test_accuracy"))
    return (
        f"MLflow store: {shape.runs:,} trial runs in {shape.sweeps} sweeps (each a parent run); a trial has "
        f"{len(trial.data.params)} params, {len(trial.data.tags)} tags, {len(trial.data.metrics)} metrics and up to "
        f"{history} epochs of history; {how}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000, help="trial runs in the store")
    parser.add_argument("--sweeps", type=int, default=20, help="sweeps (parent runs) they are nested under")
    parser.add_argument("--epochs", type=int, default=25, help="epochs of per-epoch metric history per trial")
    parser.add_argument("--store", type=Path, help="keep the built store here, and reuse it when the sizes match")
    parser.add_argument("--finished", type=int, default=50, help="trials that finish between the last two reports")
    parser.add_argument("--deleted", type=int, default=10, help="trials deleted between the last two reports")
    parser.add_argument(
        "--check",
        action="store_true",
        help="also compare the last report with one that reads every run (report.cache=false)",
    )
    args = parser.parse_args()
    shape = Shape(args.runs, args.sweeps, args.epochs)
    db, how = stored(args.store, shape)
    with tempfile.TemporaryDirectory(prefix="greenai-report-scale-") as tmp:
        work = Path(tmp)
        shutil.copy(db, work / "mlflow.db")  # the timed reports change this copy, never the kept store
        print(shape_line(work / "mlflow.db", shape, how))
        measure(work, shape, args)


def measure(work: Path, shape: Shape, args: argparse.Namespace) -> None:
    baseline, runs = timed_search(work / "mlflow.db", paused=False)
    rows = [
        ("baseline: paginated search_runs over the experiment (the report's read before)", baseline),
        (
            "  the same search with the garbage collector paused (the report's read now)",
            timed_search(work / "mlflow.db", paused=True)[0],
        ),
        ("report command start-up alone (python -m greenai.report --cfg job)", report(work, "--cfg", "job")),
        (
            "report with its cache off (report.cache=false: every run read)",
            report(work, "report.cache=false", "report.out_dir=reports/uncached"),
        ),
        ("first report (every run read, cache written beside report.md)", report(work)),
    ]
    first = (work / "reports" / "greenai" / "report.md").read_text()
    counts = [trials_counted(work, "reports/uncached"), trials_counted(work)]
    rows.append(("repeated report, nothing changed", report(work)))
    same = (work / "reports" / "greenai" / "report.md").read_text() == first
    counts.append(trials_counted(work))
    expected = [shape.runs] * 3
    expected.append(shape.runs + live_changes(work / "mlflow.db", shape, args.finished, args.deleted))
    rows.append(
        (f"repeated report after {args.finished} trials finished, 1 started, {args.deleted} deleted", report(work))
    )
    counts.append(trials_counted(work))
    print(f"{runs:,} runs searched; seconds, and ratio to the baseline measured just now:")
    for label, seconds in rows:
        print(f"  {label:<92} {seconds:7.2f} s  {seconds / baseline:5.2f} x")
    startup = rows[2][1]
    print(
        f"  each report less the command's start-up: first {rows[4][1] - startup:.2f} s, repeated "
        f"{rows[5][1] - startup:.2f} s and {rows[6][1] - startup:.2f} s"
    )
    print(f"  every report counted the trial runs the store held: {counts == expected} ({counts}, expected {expected})")
    print(f"  repeated report identical to the first: {same}")
    if args.check:
        report(work, "report.cache=false", "report.out_dir=reports/uncached")
        fresh = (work / "reports" / "uncached" / "report.md").read_text()
        same = fresh == (work / "reports" / "greenai" / "report.md").read_text()
        print(f"  last report identical to one reading every run: {same}")


if __name__ == "__main__":
    main()
