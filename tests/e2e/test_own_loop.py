"""A user's own Hydra app and loop, through greenai's public API (docs/your-own-loop.md): the
config groups it composes, pruning in a greenai sweep (by leaving the loop and by raising
TrialPruned), bad settings refused in one line before a run exists, a full store ending the
command in the one line greenai's command says, and the Lightning callback's version check.
The apps are written by the tests and run as a user runs them, in a fresh folder.
(tests/e2e/test_examples.py runs the example project under examples/.)"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from mlflow import MlflowClient
from omegaconf import OmegaConf
from packaging.requirements import Requirement
from store_readers import mlflow_runs, optuna_trials, sweep_runs, trial_runs
from test_full_disk import LINE_END, assert_one_line, runs_in
from waiting import wait_for

from greenai.train import CONF_DIR
from greenai.trial.sweep_identity import study_name

REPO = Path(__file__).resolve().parents[2]
# A user's app: epochs that wait, a score reported each epoch (0.9 for the first trial of a
# sweep, 0.1 for the others), and a pruned trial left by `break` (trial 1) or by raising (trial 2).
APP = """
import time

import hydra

import greenai


@hydra.main(config_path="conf", config_name="config", execution_whitelist=greenai.TRUSTED_TARGETS)
def main(cfg):
    number = cfg.greenai.sweep.trial_number
    score = {cfg.greenai.metric: 0.1 if number else 0.9} if cfg.score else {}
    with greenai.Trial(cfg) as trial:
        for epoch in range(cfg.epochs):
            with trial.epoch():
                time.sleep(cfg.pause)
                with trial.evaluation():
                    time.sleep(cfg.pause / 2)
                trial.report(loss=1.0 / (epoch + 1), **score)
            if trial.should_prune:
                if number == 2:
                    raise greenai.TrialPruned()
                break
    return trial.objective


if __name__ == "__main__":
    with greenai.command_line_errors():
        main()
"""
CONFIG = """
defaults:
  - greenai: trial
  - _self_

epochs: 3
pause: 0.05
score: true
x: 0.5
greenai:
  metric: score
  energy:
    backend: estimate
"""


@pytest.fixture
def app_conf(tmp_path: Path) -> Path:
    """The app's config folder."""
    conf = tmp_path / "app" / "conf"
    conf.mkdir(parents=True)
    (conf / "config.yaml").write_text(CONFIG)
    return conf


@pytest.fixture
def app(app_conf: Path, tmp_path: Path):
    """Run the test's app as a user does: `python app.py ARGS` in a fresh folder."""
    code = app_conf.parent
    (code / "app.py").write_text(APP)
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("MLFLOW_EXPERIMENT_NAME", None)

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, str(code / "app.py"), *args],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
        return proc

    def start(*args: str, log: Path) -> subprocess.Popen:
        out = log.open("w")
        return subprocess.Popen(
            [sys.executable, str(code / "app.py"), *args], cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT
        )

    run.cwd, run.code, run.start = work, code, start  # type: ignore[attr-defined]
    return run


def composed(config_dir: Path, name: str, overrides: list[str]):
    import greenai.sweep.sweeper  # noqa: F401 (Hydra imports it as it loads its plugins: the groups)

    with initialize_config_dir(config_dir=str(config_dir)):
        return compose(config_name=name, overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize("searcher", ["grid", "random", "bayes", "tpe"])
def test_an_apps_searcher_is_greenais_own(app_conf, searcher):
    """`greenai/searcher=X` in an app gives greenai's sweeper the same sampler settings as
    `searcher=X` in greenai's own config, its seed read from greenai.seed."""
    ours = composed(Path(CONF_DIR), "config", [f"searcher={searcher}"]).hydra.sweeper
    theirs = composed(app_conf, "config", [f"greenai/searcher={searcher}"]).hydra.sweeper
    mine, yours = (OmegaConf.to_container(s, resolve=False) for s in (ours, theirs))
    assert (mine["sampler"].pop("seed"), yours["sampler"].pop("seed")) == ("${seed}", "${greenai.seed}")
    assert yours == mine


@pytest.mark.parametrize("pruner", ["none", "median", "successive_halving", "hyperband"])
def test_an_apps_pruner_is_greenais_own(app_conf, pruner):
    ours = composed(Path(CONF_DIR), "config", [f"pruner={pruner}"]).sweep.pruner
    theirs = composed(app_conf, "config", [f"greenai/pruner={pruner}"]).greenai.sweep.pruner
    plain = [OmegaConf.to_container(p) if p is not None else None for p in (ours, theirs)]
    assert plain[1] == plain[0] and (plain[0] is None) == (pruner == "none")


def test_greenais_sweeper_reads_an_apps_settings_from_its_greenai_node(app_conf):
    """The sweeper's study storage, name and directions come from `greenai.*`, as they come from
    `sweep.*` and `objective.*` in greenai's own config; the study is named after the app."""
    cfg = composed(
        app_conf,
        "config",
        ["greenai/searcher=tpe", "greenai.sweep.storage=sqlite:///s.db", "greenai.objective.directions=[minimize]"],
    )
    assert cfg.hydra.sweeper.storage == "sqlite:///s.db" and cfg.hydra.sweeper.study_name is None
    assert list(cfg.hydra.sweeper.direction) == ["minimize"]
    assert study_name(cfg).startswith(f"{cfg.hydra.job.name}-tpe-")
    ours = composed(Path(CONF_DIR), "config", ["searcher=tpe", "sweep.storage=sqlite:///t.db"])
    assert ours.hydra.sweeper.storage == "sqlite:///t.db" and list(ours.hydra.sweeper.direction) == ["maximize"]


@pytest.mark.slow
def test_a_greenai_sweep_of_an_app_prunes_whether_it_breaks_or_raises(app):
    """Trial 0 scores 0.9 and finishes; trials 1 and 2 score 0.1, the median pruner stops them
    after their first epoch: trial 1 leaves its loop, trial 2 raises TrialPruned. Each is
    recorded pruned after one epoch, in MLflow and in Optuna, under the sweep's parent run."""
    app(
        "-m",
        "greenai/searcher=random",
        "greenai/pruner=median",
        "greenai.sweep.pruner.n_startup_trials=1",
        "greenai.sweep.pruner.n_warmup_steps=0",
        "x=interval(0,1)",
        "hydra.sweeper.n_trials=3",
    )
    states = {t.number: t.state.name for t in optuna_trials(app.cwd)}
    assert states == {0: "COMPLETE", 1: "PRUNED", 2: "PRUNED"}
    runs = mlflow_runs(app.cwd)
    (parent,) = sweep_runs(runs)
    trials = {int(r.data.tags["optuna.trial_number"]): r for r in trial_runs(runs)}
    assert {n: r.data.tags["greenai.trial_state"] for n, r in trials.items()} == {
        0: "finished",
        1: "pruned",
        2: "pruned",
    }
    assert {n: r.data.metrics["epochs_run"] for n, r in trials.items()} == {0: 3, 1: 1, 2: 1}
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in trials.values())
    assert parent.data.metrics["sweep_trials_pruned"] == 2
    client = MlflowClient(f"sqlite:///{app.cwd / 'mlflow.db'}")
    steps = [m.step for m in client.get_metric_history(trials[0].info.run_id, "epoch_energy_j")]
    assert steps == [1, 2, 3]
    assert trials[0].data.metrics["accuracy"] == pytest.approx(0.9), "the objective, as greenai's totals read it"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["greenai.energy.backend=nvidia"], "greenai.energy.backend=nvidia: must be one of auto, zeus, estimate, off"),
        (["greenai/searcher=annealing"], "greenai/searcher=annealing: unknown greenai/searcher; choose one of bayes,"),
        (["greenai.sweep.trials_per_gpu=2"], "greenai.sweep.trials_per_gpu=2: must be 1: packing trials"),
        (["greenai.energy.idle_seconds=-1"], "greenai.energy.idle_seconds=-1.0: must be >= 0"),
        (["-m", "greenai.energy.idle_seconds=0,-1"], "greenai.energy.idle_seconds=-1.0: must be >= 0"),
    ],
)
def test_bad_greenai_settings_are_refused_in_one_line_before_a_run_exists(app, args, line):
    proc = app(*args, check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [x for x in proc.stderr.splitlines() if x.startswith("greenai: error: ")]
    assert len(errors) == 1 and errors[0].startswith(f"greenai: error: {line}"), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert not (app.cwd / "outputs").exists() or not list((app.cwd / "outputs").rglob("*.log")), "no job ran"
    if (app.cwd / "mlflow.db").exists():
        assert trial_runs(mlflow_runs(app.cwd)) == [], "no trial run"


@pytest.mark.slow
def test_an_objective_never_reported_fails_the_run_in_one_line(app):
    proc = app("score=false", check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert_one_line(
        proc.stderr,
        "greenai.metric=score: was never reported",
        "report it each epoch or at the end, or name a metric the app reports",
    )
    (run,) = trial_runs(mlflow_runs(app.cwd))
    assert run.data.tags["greenai.trial_state"] == "failed" and run.data.metrics["epochs_run"] == 3


@pytest.mark.slow
def test_a_single_run_whose_mlflow_disk_fills_stops_with_greenais_line(app, small_disk, tmp_path):
    db = small_disk.path / "mlflow.db"
    log = tmp_path / "run.log"
    proc = app.start("epochs=400", "pause=0.1", f"greenai.tracking.uri=sqlite:///{db}", log=log)
    wait_for(log, "epoch   2 ", proc)
    small_disk.fill()
    code = proc.wait(timeout=300)
    text = log.read_text()
    assert code == 3, text[-3000:]
    assert_one_line(
        text,
        f"tracking.uri=sqlite:///{db}: the disk holding {db} is full",
        "; the run stopped, recorded as far as the stores could take it. Free space there, then run the command again",
    )


@pytest.mark.slow
def test_a_sweep_whose_mlflow_disk_fills_starts_no_further_trial(app, small_disk, tmp_path):
    db = small_disk.path / "mlflow.db"
    log = tmp_path / "sweep.log"
    args = ["-m", "greenai/searcher=random", "x=interval(0,1)", "hydra.sweeper.n_trials=3", "epochs=400", "pause=0.1"]
    proc = app.start(*args, f"greenai.tracking.uri=sqlite:///{db}", log=log)
    wait_for(log, "round1] epoch   2 ", proc)
    small_disk.fill()
    code = proc.wait(timeout=300)
    text = log.read_text()
    assert code == 3, text[-3000:]
    assert_one_line(text, f"tracking.uri=sqlite:///{db}: the disk holding {db} is full", LINE_END)
    assert "round2]" not in text, "no further trial is launched"
    small_disk.free()
    (trial,) = optuna_trials(app.cwd)
    assert trial.state.name == "FAIL" and trial.user_attrs.get("interrupted"), "a resumed sweep runs its point again"
    assert len(trial_runs(runs_in(db))) == 1, "no other trial opened a run"


LIGHTNING_APP = """
import hydra
import lightning
import torch
from torch.utils.data import DataLoader, TensorDataset

import greenai


class Scored(lightning.LightningModule):
    def __init__(self, score):
        super().__init__()
        self.layer, self.score = torch.nn.Linear(4, 2), score

    def training_step(self, batch, index):
        x, y = batch
        return torch.nn.functional.cross_entropy(self.layer(x), y)

    def validation_step(self, batch, index):
        self.log("val/score", self.score)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@hydra.main(config_path="conf", config_name="config", execution_whitelist=(*greenai.TRUSTED_TARGETS, "lightning.*"))
def main(cfg):
    data = DataLoader(TensorDataset(torch.randn(64, 4), torch.randint(0, 2, (64,))), batch_size=16)
    callback = hydra.utils.instantiate(cfg.callback)
    trainer = lightning.Trainer(max_epochs=cfg.epochs, callbacks=[callback], logger=False, enable_checkpointing=False)
    trainer.fit(Scored(0.1 if cfg.greenai.sweep.trial_number else 0.9), data, data)
    return callback.objective


main()
"""


@pytest.mark.slow
def test_the_lightning_callback_prunes_in_a_greenai_sweep(app, tmp_path):
    """Trial 1's validation scores below trial 0's: the pruner stops its fit after one epoch
    (trainer.should_stop), recorded pruned; each epoch has its training and validation windows."""
    pytest.importorskip("lightning")
    (app.code / "app.py").write_text(LIGHTNING_APP)
    app(
        "-m",
        "greenai/searcher=random",
        "greenai/pruner=median",
        "greenai.sweep.pruner.n_startup_trials=1",
        "greenai.sweep.pruner.n_warmup_steps=0",
        "x=interval(0,1)",
        "hydra.sweeper.n_trials=2",
        "greenai.metric=val/score",
        "+callback._target_=greenai.api.lightning.TrialCallback",
    )
    assert {t.number: t.state.name for t in optuna_trials(app.cwd)} == {0: "COMPLETE", 1: "PRUNED"}
    trials = {int(r.data.tags["optuna.trial_number"]): r for r in trial_runs(mlflow_runs(app.cwd))}
    assert {n: r.data.tags["greenai.trial_state"] for n, r in trials.items()} == {0: "finished", 1: "pruned"}
    assert {n: r.data.metrics["epochs_run"] for n, r in trials.items()} == {0: 3, 1: 1}
    client = MlflowClient(f"sqlite:///{app.cwd / 'mlflow.db'}")
    for key in ("epoch_energy_j", "eval_energy_j_epoch", "val/score"):
        assert [m.step for m in client.get_metric_history(trials[0].info.run_id, key)] == [1, 2, 3], key
    assert trials[0].data.tags["versions.lightning"]


def test_a_lightning_outside_the_supported_range_is_one_line(capsys):
    pytest.importorskip("lightning")
    from greenai.api.lightning import check_lightning

    with pytest.raises(SystemExit) as stopped:
        check_lightning("2.1.0")
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "greenai: error: lightning=2.1.0: greenai's TrialCallback supports lightning<2.7,>=2.5; "
        "pip install 'greenai[lightning]' installs one"
    ]
    check_lightning("2.6.6")  # inside the range: nothing said


def test_the_lightning_extra_pins_the_range_the_callback_supports():
    from greenai.api.lightning import SUPPORTED

    text = (REPO / "pyproject.toml").read_text()
    (pin,) = re.findall(r'^lightning = \["([^"]+)"\]$', text, flags=re.MULTILINE)
    assert Requirement(pin).name == "lightning" and Requirement(pin).specifier == SUPPORTED
    (test,) = re.findall(r"^test = \[(.*)\]$", text, flags=re.MULTILINE)
    assert "lightning" in test, "CI's test extra installs it"


def test_the_package_hands_out_the_api_lazily():
    """`import greenai.names` imports no torch or MLflow; `greenai.Trial` is the API's."""
    code = textwrap.dedent(
        """
        import sys
        import greenai.names
        assert "torch" not in sys.modules and "mlflow" not in sys.modules, sorted(sys.modules)
        import greenai
        from greenai.api import Trial
        assert greenai.Trial is Trial
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ})


def settings_only(tmp_path: Path) -> OmegaConf:
    return OmegaConf.create(
        {
            "lr": 0.1,
            "greenai": {
                "metric": "acc",
                "energy": {"backend": "estimate", "idle_seconds": 0},
                "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
            },
        }
    )


def test_a_plain_script_records_its_epochs_and_returns_the_metric(tmp_path, monkeypatch):
    """Outside Hydra too: each epoch's windows and metrics at its step, the objective the last
    value reported (a final report counts), the run FINISHED with the config as params."""
    import greenai

    monkeypatch.chdir(tmp_path)
    with greenai.Trial(settings_only(tmp_path), device="cpu") as trial:
        for epoch in range(2):
            with trial.epoch():
                sum(i * i for i in range(200_000))  # some CPU time for the estimate to count
                with trial.evaluation():
                    pass
                trial.report(acc=0.5 + epoch / 10)
        trial.report(acc=0.75)
    assert trial.objective == pytest.approx(0.75)
    (run,) = trial_runs(mlflow_runs(tmp_path))
    assert run.info.status == "FINISHED" and run.data.params["lr"] == "0.1"
    assert run.data.tags["energy_source"] == "estimated" and run.data.metrics["energy_j"] > 0
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "acc")] == [
        (1, 0.5),
        (2, pytest.approx(0.6)),
        (2, 0.75),
    ]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "epoch_energy_j")] == [1, 2]


def test_an_evaluation_outside_an_epoch_is_one_line_and_the_run_failed(tmp_path, monkeypatch, capsys):
    import greenai

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stopped, greenai.Trial(settings_only(tmp_path), device="cpu") as trial:
        with trial.evaluation():
            pass
    assert stopped.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("greenai: ")]
    assert errors == ["greenai: error: trial.evaluation(): use it inside `with trial.epoch():`"]
    (run,) = trial_runs(mlflow_runs(tmp_path))
    assert run.info.status == "FAILED" and run.data.tags["greenai.trial_state"] == "failed"
