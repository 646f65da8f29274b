"""A tracking server that goes away for longer than MLflow's retries: training goes on, what
cannot be sent is kept in the spool, and once the server is back every param, tag and
per-epoch metric is in its store, each once.

The server is a real `mlflow server` on loopback, killed (SIGKILL, as a crash) and started
again on the same port and store. MLflow alone would retry each request for about 4 minutes;
greenai shortens MLflow's own retry budget (MLFLOW_HTTP_REQUEST_MAX_RETRIES=2,
MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR=1, MLFLOW_HTTP_REQUEST_TIMEOUT=15, set by greenai.stores.spool
unless the user set them) and keeps what the server does not take, which is what lets these
tests hold the server down for less than a minute.
"""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

import pytest
from datasets_on_disk import tiny_args
from servers import MlflowServer
from store_readers import assert_every_epoch_once, optuna_trials
from waiting import wait_for

pytestmark = pytest.mark.slow


def server_runs(uri: str) -> tuple[object, list]:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("greenai")
    assert experiment is not None
    return client, client.search_runs([experiment.experiment_id], max_results=1000)


def spooled_note(run) -> bool:
    return any(line.startswith("Spooled: ") for line in run.data.tags.get("mlflow.note.content", "").splitlines())


def kept_writes(work: Path) -> list[Path]:
    return sorted((work / ".greenai" / "spool").rglob("*.writes"))


@pytest.fixture
def server(tmp_path):
    started = MlflowServer(tmp_path / "server")
    started.start()
    yield started
    started.stop()


def test_a_sweep_trains_on_while_the_server_is_away_and_sends_everything_once_it_is_back(
    greenai, fashion_root, tmp_path, server
):
    epochs = 6
    args = [
        "-m",
        "searcher=grid",
        "lr=choice(0.001,0.002,0.003)",
        "hydra.sweeper.n_trials=3",
        f"tracking.uri={server.uri}",
        *tiny_args(fashion_root, tmp_path / "cache", epochs=epochs, batch_size=16),
    ]
    log = tmp_path / "sweep.log"
    proc = greenai.start(*args, log=log)
    wait_for(log, "round1] epoch   2/6", proc)
    server.stop()
    # The whole of the next trial is created, trains and finishes while the server is away.
    wait_for(log, "round2: accuracy", proc)
    assert kept_writes(greenai.cwd), "what the server could not take is in the spool"
    # Held still while the server starts again (it takes seconds), so the server is back
    # while the sweep still runs: the running command, not a later one, must send the spool.
    proc.send_signal(signal.SIGSTOP)
    try:
        server.start()
    finally:
        proc.send_signal(signal.SIGCONT)
    assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]

    text = log.read_text()
    assert text.count("the MLflow server does not answer") == 1, "said once"
    assert text.count("answers after") >= 1
    assert kept_writes(greenai.cwd) == [], "the spool was sent and emptied"
    client, runs = server_runs(server.uri)
    kinds = Counter(r.data.tags.get("greenai.run_kind") for r in runs)
    assert kinds == {"trial": 3, "sweep": 1}, kinds
    (sweep,) = [r for r in runs if r.data.tags["greenai.run_kind"] == "sweep"]
    trials = sorted(
        (r for r in runs if r.data.tags["greenai.run_kind"] == "trial"), key=lambda r: int(r.data.tags["greenai.round"])
    )
    assert [r.info.status for r in runs] == ["FINISHED"] * 4
    assert [r.data.tags["greenai.trial_state"] for r in trials] == ["finished"] * 3
    assert all(r.data.tags["mlflow.parentRunId"] == sweep.info.run_id for r in trials)
    params = [set(r.data.params) for r in trials]
    assert len(params[0]) > 40 and params[0] == params[1] == params[2], "every trial has every param"
    for run in trials:
        assert_every_epoch_once(client, run, epochs)
        assert run.data.metrics["epochs_run"] == epochs
        assert run.data.metrics["accuracy"] == run.data.metrics["test_accuracy"], "the last epoch's accuracy"
        assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["config.yaml"]
    assert spooled_note(trials[0]) and spooled_note(trials[1]), "the description says so"
    # Round 2's run was created while the server was away: its Optuna trial keeps the local id,
    # which the run carries as a tag.
    by_number = {t.number: t for t in optuna_trials(greenai.cwd)}
    assert [t.state.name for t in by_number.values()] == ["COMPLETE"] * 3
    local = by_number[1].user_attrs["mlflow_run_id"]
    assert local.startswith("spooled-") and trials[1].data.tags["greenai.spool_id"] == local
    assert by_number[0].user_attrs["mlflow_run_id"] == trials[0].info.run_id


def test_a_run_kept_while_the_server_is_away_is_sent_by_the_next_command(greenai, tiny, fashion_root, tmp_path, server):
    epochs = 10
    args = [f"tracking.uri={server.uri}", *tiny_args(fashion_root, tmp_path / "cache", epochs=epochs, batch_size=16)]
    log = tmp_path / "run.log"
    proc = greenai.start(*args, log=log)
    wait_for(log, "epoch   2/10", proc)
    server.stop()
    assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    assert "MLflow writes wait in" in log.read_text() and kept_writes(greenai.cwd)
    server.start()

    greenai(f"tracking.uri={server.uri}", *tiny)  # the next command using the server: another run
    assert kept_writes(greenai.cwd) == []
    synced = greenai(module="sync")
    assert "nothing to send" in synced.stdout

    client, runs = server_runs(server.uri)
    assert len(runs) == 2 and [r.info.status for r in runs] == ["FINISHED", "FINISHED"]
    (first,) = [r for r in runs if r.data.metrics.get("epochs_run") == epochs]
    assert_every_epoch_once(client, first, epochs)
    assert first.data.tags["greenai.trial_state"] == "finished"
    assert spooled_note(first), "the description says so"
    assert set(first.data.params) == set(runs[0].data.params) == set(runs[1].data.params)


def test_writes_whose_answers_were_lost_are_sent_again_but_stored_once(tmp_path, server, capsys, monkeypatch):
    """The server takes a write, then its answer is lost (injected: the real call is made, then
    a connection error raised, as a connection dropped mid-answer would), once for each kind of
    write: greenai keeps each, sends it again when the server answers, finds the run it
    created instead of making a second, and the store holds every param and point once."""
    import requests
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    from greenai import sync
    from greenai.stores import spool

    lost: set[str] = set()

    class AnswerLostOnce:
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            call = getattr(self.inner, name)
            if name not in ("create_run", "log_batch", "set_terminated") or name in lost:
                return call

            def made_then_lost(*args, **kwargs):
                call(*args, **kwargs)
                lost.add(name)
                raise requests.ConnectionError("connection dropped before the answer")

            return made_then_lost

    root = tmp_path / "spool"
    monkeypatch.setenv(spool.SPOOL_DIR_ENV, str(root))
    monkeypatch.setattr(spool, "PROBE_SECONDS", 0.0)  # each write asks the server again at once
    real = MlflowClient(server.uri)
    experiment = real.create_experiment("greenai")
    client = spool.SpoolingClient(AnswerLostOnce(real), server.uri)
    run = client.create_run(experiment, run_name="lost", tags={"k": "v"})
    assert run.info.run_id.startswith("spooled-")
    metrics = [Metric("loss", 0.5, 1000, 1), Metric("loss", 0.25, 2000, 2)]
    client.log_batch(run.info.run_id, params=[Param("lr", "0.1")], tags=[RunTag("t", "1")], metrics=metrics)
    client.set_terminated(run.info.run_id, "FINISHED")
    assert lost == {"create_run", "log_batch", "set_terminated"}
    assert len(spool.folders(root)) == 1, "the last lost answer is still kept"
    assert sync.main(["--spool", str(root)]) == 0
    assert "sent 1 write of 1 run" in capsys.readouterr().out
    assert sync.main(["--spool", str(root)]) == 0
    assert "nothing to send" in capsys.readouterr().out

    (stored,) = real.search_runs([experiment])
    assert stored.info.status == "FINISHED" and stored.data.params == {"lr": "0.1"}
    assert stored.data.tags["greenai.spool_id"] == run.info.run_id and stored.data.tags["t"] == "1"
    assert [(m.step, m.value) for m in real.get_metric_history(stored.info.run_id, "loss")] == [(1, 0.5), (2, 0.25)]
