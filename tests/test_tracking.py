"""MLflow runs end FINISHED, FAILED or KILLED as they should; URLs never leak passwords."""

from __future__ import annotations

import pytest

from greenai import redaction, tracking
from greenai.sweep.study_link import Pruned


@pytest.fixture
def uri(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def ended(uri, body):
    run_id = {}
    try:
        with tracking.open_run(uri, "exp", "r", {tracking.RUN_KIND: "trial"}) as run:
            run_id["id"] = run.run_id
            run.metrics({"energy_j": 3.0})
            body()
    except BaseException:
        pass
    got = tracking.client(uri).get_run(run_id["id"])
    return got.info.status, got.data.tags.get(tracking.TRIAL_STATE), got.data.tags.get(tracking.FAILURE_REASON), got.data.metrics


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
            with tracking.open_run(uri, "exp", f"c{i}", {tracking.PARENT: parent.run_id}):
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
    assert "s3cret" not in redaction.redact_text(f"storage: {url}\nother: 1") and "pw@" not in redaction.redact_text(url)


def test_relative_sqlite_paths_are_taken_from_the_launch_folder(tmp_path):
    assert tracking.resolve_uri("sqlite:///mlflow.db", tmp_path) == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert tracking.resolve_uri("sqlite:////abs/m.db", tmp_path) == "sqlite:////abs/m.db"
    assert tracking.resolve_uri("http://host:5000", tmp_path) == "http://host:5000"


def test_logged_lines_never_carry_a_password(capsys):
    import logging

    from greenai.redaction import redact_logs

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
    from omegaconf import OmegaConf

    from greenai.job import JobContext

    cfg = OmegaConf.create({"tracking": {"uri": "postgresql://u:pw@db/m"}, "sweep": {"storage": "mysql://v:pw2@db/o"}, "lr": 0.1})
    flat = JobContext.flat_params(cfg)
    assert flat["tracking.uri"] == "postgresql://u:***@db/m" and flat["sweep.storage"] == "mysql://v:***@db/o"


def test_a_locked_database_is_retried_not_raised():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("(sqlite3.OperationalError) database is locked")
        return "ok"

    assert tracking.with_retries(flaky) == "ok" and len(calls) == 3
