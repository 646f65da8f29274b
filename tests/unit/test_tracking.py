"""MLflow runs end FINISHED, FAILED or KILLED as they should; URLs never leak passwords."""

from __future__ import annotations

import pytest

from greenai import names
from greenai.stores import redaction, tracking
from greenai.stores.url import StoreURL
from greenai.trial.outcome import Pruned


@pytest.fixture
def uri(tmp_path):
    return StoreURL.tracking("sqlite:///mlflow.db", tmp_path)


def ended(uri, body):
    run_id = {}
    try:
        with tracking.open_run(uri, "exp", "r", {names.RUN_KIND: "trial"}) as run:
            run_id["id"] = run.run_id
            run.metrics({"energy_j": 3.0})
            body()
    except BaseException:
        pass
    got = tracking.client(uri).get_run(run_id["id"])
    return (
        got.info.status,
        got.data.tags.get(names.TRIAL_STATE),
        got.data.tags.get(names.FAILURE_REASON),
        got.data.metrics,
    )


def test_a_trial_that_returns_is_finished(uri):
    assert ended(uri, lambda: None)[:2] == ("FINISHED", "finished")


def test_a_trial_that_raises_is_failed_with_its_reason(uri):
    def boom():
        raise ValueError("loss became nan")

    status, state, reason, metrics = ended(uri, boom)
    assert (status, state, reason) == ("FAILED", "failed", "ValueError: loss became nan")
    assert metrics["energy_j"] == 3.0, "what was logged before the failure is kept"


def test_an_interrupted_trial_is_killed_not_running(uri):
    def interrupt():
        raise KeyboardInterrupt

    assert ended(uri, interrupt)[:2] == ("KILLED", "killed")


def test_a_pruned_trial_is_finished_and_tagged_pruned(uri):
    def prune():
        raise Pruned("pruned at step 2")

    assert ended(uri, prune)[:2] == ("FINISHED", "pruned")


def test_params_over_mlflows_batch_limit_are_all_logged(uri):
    with tracking.open_run(uri, "exp", "r", {}) as run:
        run.params({f"p{i}": i for i in range(250)})
    assert len(tracking.client(uri).get_run(run.run_id).data.params) == 250


def test_children_are_found_under_their_parent(uri):
    with tracking.open_run(uri, "exp", "parent", {}) as parent:
        for i in range(3):
            with tracking.open_run(uri, "exp", f"c{i}", {names.PARENT: parent.run_id}):
                pass
    assert [r.info.run_name for r in tracking.child_runs(tracking.client(uri), parent.run_id)] == ["c0", "c1", "c2"]


@pytest.mark.parametrize(
    ("url", "safe"),
    [
        ("postgresql://alice:s3cret@db:5432/optuna", "postgresql://alice:***@db:5432/optuna"),
        ("http://bob:pw@mlflow:5000", "http://bob:***@mlflow:5000"),
        ("sqlite:///mlflow.db", "sqlite:///mlflow.db"),
    ],
)
def test_redact_hides_passwords(url, safe):
    assert redaction.redact(url) == safe
    assert "s3cret" not in redaction.redact_text(f"storage: {url}\nother: 1") and "pw@" not in redaction.redact_text(
        url
    )


def test_relative_sqlite_paths_are_taken_from_the_launch_folder(tmp_path):
    assert StoreURL.parse("sqlite:///mlflow.db", tmp_path).url == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert StoreURL.parse("sqlite:////abs/m.db", tmp_path).url == "sqlite:////abs/m.db"
    assert StoreURL.parse("http://host:5000", tmp_path).url == "http://host:5000"


def test_logged_lines_never_carry_a_password(capsys):
    import logging

    from greenai.stores.redaction import redact_logs

    logger = logging.getLogger("hydra")
    handler = logging.StreamHandler()
    logger.addHandler(handler)
    try:
        redact_logs()
        logger.warning("#0 : tracking.uri=%s lr=0.1", "http://alice:s3cret@mlflow:5000")
    finally:
        logger.removeHandler(handler)
    err = capsys.readouterr().err
    assert "s3cret" not in err and "http://alice:***@mlflow:5000" in err


def test_params_hide_passwords_in_store_urls():
    from greenai.trial.record import flat_params

    tree = {"tracking": {"uri": "postgresql://u:pw@db/m"}, "sweep": {"storage": "mysql://v:pw2@db/o"}, "lr": 0.1}
    flat = flat_params(tree)
    assert flat["tracking.uri"] == "postgresql://u:***@db/m" and flat["sweep.storage"] == "mysql://v:***@db/o"


def test_a_locked_database_is_retried_not_raised():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("(sqlite3.OperationalError) database is locked")
        return "ok"

    assert tracking.with_retries(StoreURL.tracking("sqlite:///m.db", "."), flaky) == "ok" and len(calls) == 3


def test_runs_carry_mlflows_own_context_tags_and_the_experiment_says_model_training(uri):
    with tracking.open_run(uri, "ctx", "r", {names.RUN_KIND: "trial"}) as run:
        pass
    client = tracking.client(uri)
    tags = client.get_run(run.run_id).data.tags
    assert tags["mlflow.user"] and tags["mlflow.source.type"] == "LOCAL" and tags[names.RUN_KIND] == "trial"
    experiment = client.get_experiment_by_name("ctx")
    assert experiment.tags[tracking.EXPERIMENT_KIND] == tracking.MODEL_TRAINING


def test_a_run_a_dead_process_left_running_is_closed_killed_when_the_store_is_next_opened(uri):
    import socket

    mlflow = tracking.client(uri)
    dead = tracking.create_run(mlflow, "exp", "orphan", {names.OWNER: f"{socket.gethostname()}:999999"})
    alive = tracking.create_run(
        mlflow, "exp", "live", {names.OWNER: f"{socket.gethostname()}:{__import__('os').getpid()}"}
    )
    swept = tracking.create_run(
        mlflow, "exp", "sweep child", {names.OWNER: f"{socket.gethostname()}:999999", names.TRIAL_NUMBER: 3}
    )
    assert tracking.close_dead_runs(mlflow) == 1
    run = mlflow.get_run(dead.run_id)
    assert run.info.status == "KILLED" and run.data.tags[names.TRIAL_STATE] == "killed"
    assert "process ended" in run.data.tags[names.FAILURE_REASON]
    assert mlflow.get_run(alive.run_id).info.status == "RUNNING"
    assert mlflow.get_run(swept.run_id).info.status == "RUNNING", "a sweep's parent run settles its own children"


def test_hydras_escaped_urls_in_its_log_lines_hide_the_password_too():
    line = r"#0 : sweep.storage=postgresql\://greenai\:s3cret@127.0.0.1\:5433/optuna lr=0.1"
    assert "s3cret" not in redaction.redact_text(line) and r"greenai\:***@" in redaction.redact_text(line)
