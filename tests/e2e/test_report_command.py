"""`python -m greenai.report` on a store made by real tiny sweeps: its numbers are checked
against ones computed here, independently, from the runs' own metrics."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from datasets_on_disk import tiny_args, write_fashion
from store_readers import mlflow_runs, sweep_runs, trial_runs

# Under pytest-xdist one worker runs them all: they read one store made once (two sweeps).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("report-store")]


def greenai_in(work: Path, module: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", f"greenai.{module}", *args],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """Two real sweeps: random over conv (1-2), linear (3-4) and ReLU; TPE over lr and beta1."""
    work = tmp_path_factory.mktemp("report")
    data = write_fashion(work / "data", train=300, test=100)
    tiny = tiny_args(data, work / "cache")
    greenai_in(
        work,
        "train",
        "-m",
        "searcher=random",
        "conv_layers=range(1,3)",
        "linear_layers=range(3,5)",
        "relu=choice(true,false)",
        "hydra.sweeper.n_trials=8",
        *tiny,
    )
    greenai_in(
        work,
        "train",
        "-m",
        "searcher=tpe",
        "lr=interval(1e-4,1e-2)",
        "beta1=interval(0.5,0.95)",
        "hydra.sweeper.n_trials=5",
        *tiny,
    )
    greenai_in(work, "report")
    return work


def report_text(work: Path) -> str:
    return (work / "reports" / "greenai" / "report.md").read_text()


def table_rows(text: str, header_start: str) -> list[list[str]]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def test_convergence_rounds_match_the_runs(store):
    runs = mlflow_runs(store)
    rows = {r[3]: r for r in table_rows(report_text(store), "| model | dataset | space | searcher")}
    assert set(rows) == {"random", "tpe"}
    for sweep in sweep_runs(runs):
        children = sorted(
            (r for r in trial_runs(runs) if r.data.tags["mlflow.parentRunId"] == sweep.info.run_id),
            key=lambda r: int(r.data.tags["greenai.round"]),
        )
        best = max(r.data.metrics["accuracy"] for r in children)
        first = next(int(r.data.tags["greenai.round"]) for r in children if r.data.metrics["accuracy"] == best)
        row = rows[sweep.data.tags["greenai.searcher"]]
        assert row[5] == f"{best:.4f} ({first})" and row[4] == str(len(children))
        total = sum(r.data.metrics["energy_j"] for r in children)
        assert row[8] == f"{total:,.1f} J (est.)"


def test_pareto_set_matches_the_runs(store):
    runs = trial_runs(mlflow_runs(store))
    points = {
        r.info.run_name + r.data.tags["greenai.round"]: (r.data.metrics["accuracy"], r.data.metrics["energy_j"])
        for r in runs
    }
    front = {
        k
        for k, (a, e) in points.items()
        if not any(a2 >= a and e2 <= e and (a2, e2) != (a, e) for a2, e2 in points.values())
    }
    listed = {r[0] + r[1] for r in table_rows(report_text(store), "| run | round | accuracy | energy |")}
    assert listed == front


def test_per_layer_percentages_match_the_runs(store):
    runs = [r for r in trial_runs(mlflow_runs(store)) if r.data.params.get("model.name") == "simplecnn"]
    text = report_text(store)
    for factor, levels in (("conv_layers", ("1", "2")), ("linear_layers", ("3", "4")), ("relu", ("False", "True"))):
        energy = {lv: [r.data.metrics["energy_j"] for r in runs if r.data.params[factor] == lv] for lv in levels}
        if not all(energy.values()):
            continue  # this seeded draw never sampled one of the levels
        low, high = (sum(v) / len(v) for v in energy.values())
        per_layer = (high - low) / low * 100 / (1 if factor == "relu" else int(levels[1]) - int(levels[0]))
        assert f"- {factor}: {per_layer:+.1f}% energy per added layer" in text, (factor, per_layer)


def test_figures_exist_and_decode(store):
    import matplotlib.image as mpimg

    for name in ("convergence.png", "accuracy_energy.png", "layers.png"):
        image = mpimg.imread(store / "reports" / "greenai" / name)
        assert 300 <= image.shape[0] <= 4000 and 400 <= image.shape[1] <= 6000, (name, image.shape)
        assert f"({name})" in report_text(store)


def test_estimated_energy_is_said_so_at_the_top(store):
    head = report_text(store).split("## Summary")[0]
    assert "ESTIMATED" in head or "mixes measured and estimated" in head or "(est.)" not in report_text(store)


def test_one_sweep_report_is_logged_to_its_parent_run(store):
    from mlflow import MlflowClient

    sweep = sweep_runs(mlflow_runs(store))[0]
    greenai_in(store, "report", f"report.sweep={sweep.info.run_id}", "report.out_dir=reports/one")
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    logged = {a.path for a in client.list_artifacts(sweep.info.run_id, "report")}
    assert {"report/report.md", "report/accuracy_energy.png"} <= logged


def test_runs_from_an_older_greenai_are_skipped_with_a_note(store):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    exp = client.get_experiment_by_name("greenai").experiment_id
    old = client.create_run(exp, run_name="old-run", tags={"greenai.run_kind": "trial"})
    client.log_metric(old.info.run_id, "accuracy", 0.5)  # no energy_j: written before energy was logged
    client.set_terminated(old.info.run_id)
    greenai_in(store, "report", "report.out_dir=reports/with-old")
    text = (store / "reports" / "with-old" / "report.md").read_text()
    assert "Skipped in the figures (1): old-run (no energy_j" in text
    client.delete_run(old.info.run_id)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tracking.experiment=nope"], "tracking.experiment=nope: no such MLflow experiment"),
        (["report.sweep=not-a-run"], "report.sweep=not-a-run: no sweep"),
        (["tracking.uri=sqlite:///missing.db"], "tracking.uri=sqlite:///missing.db: no MLflow store there"),
    ],
)
def test_what_does_not_exist_is_a_clear_error(store, args, message):
    proc = greenai_in(store, "report", *args, check=False)
    last_line = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and last_line.startswith(f"greenai: error: {message}"), proc.stderr


def test_an_experiment_without_finished_runs_is_a_clear_error(store):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    exp = client.create_experiment("empty-one")
    failed = client.create_run(exp, run_name="crashed", tags={"greenai.run_kind": "trial"})
    client.set_terminated(failed.info.run_id, "FAILED")
    proc = greenai_in(store, "report", "tracking.experiment=empty-one", check=False)
    assert proc.returncode == 2 and "no finished runs" in proc.stderr
