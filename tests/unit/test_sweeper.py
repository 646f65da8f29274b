"""greenai's Optuna sweeper in pieces: the search space, the study's bookkeeping, stop rules.
(tests/e2e/test_sweeps.py runs whole sweeps through the command line.)"""

from __future__ import annotations

import math
import time

import optuna
import pytest
from hydra import compose, initialize_config_dir
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from greenai import names
from greenai.config import SweepConfig
from greenai.stores.url import StoreURL
from greenai.sweep.space import grid_values, half_open, parse_space
from greenai.sweep.stopping import FailureBudget, stop_reason
from greenai.sweep.study import SweepStudy
from greenai.sweep.sweeper import check_sweep
from greenai.train import CONF_DIR

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_a_continuous_grid_leaves_the_upper_bound_out_linear_and_log():
    assert grid_values(FloatDistribution(0.1, 1.0), 5) == [0.1, 0.28, 0.46, 0.64, 0.82]
    assert grid_values(FloatDistribution(1e-5, 1e-1, log=True), 4) == [1e-5, 1e-4, 1e-3, 1e-2]
    assert grid_values(IntDistribution(1, 4), 5) == [1, 2, 3, 4]
    assert grid_values(FloatDistribution(0.0, 0.3, step=0.1), 5) == [0.0, 0.1, 0.2, 0.3]
    assert grid_values(CategoricalDistribution([True, False]), 5) == [True, False]


def test_intervals_are_searched_half_open():
    dist = half_open(FloatDistribution(0.1, 1.0))
    assert dist.high < 1.0 and dist.high == math.nextafter(1.0, 0.0)
    assert half_open(IntDistribution(1, 4)) == IntDistribution(1, 4)


def test_the_space_samples_through_optunas_public_api_and_keeps_fixed_overrides():
    space = parse_space(["lr=interval(1e-5,1e-1)", "conv_layers=range(1,3)", "epochs=2", "model=densepoly"])
    assert set(space.distributions) == {"lr", "conv_layers"} and space.fixed == {"epochs": "2", "model": "densepoly"}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    overrides = space.overrides(study.ask())
    assert {o.split("=")[0] for o in overrides} == {"lr", "conv_layers", "epochs", "model"}
    assert space.probes() and all("epochs=2" in p for p in space.probes())


def test_an_inverted_range_is_one_line_naming_it(capsys):
    with pytest.raises(SystemExit) as caught:
        parse_space(["lr=interval(0.1,0.01)"])
    assert caught.value.code == 2
    assert capsys.readouterr().err.startswith("greenai: error: lr=interval(0.1,0.01): not a valid search range")


@pytest.mark.parametrize("key", ["storage", "study_name"])
def test_the_plugins_own_storage_keys_are_refused_rather_than_split_the_sweep(key, capsys, tmp_path):
    with initialize_config_dir(config_dir=CONF_DIR):
        cfg = compose(
            config_name="config",
            return_hydra_config=True,
            overrides=["searcher=random", "space=paper3", f"hydra.sweeper.{key}=other"],
        )
    with pytest.raises(SystemExit):
        check_sweep(cfg)
    err = capsys.readouterr().err
    assert f"hydra.sweeper.{key}=other: greenai's jobs read the study's {key} from sweep.{key}" in err
    assert f"set sweep.{key}=other instead" in err


def study(tmp_path, grace: int = 600, sampler=None) -> SweepStudy:
    store = StoreURL.parse("sqlite:///optuna.db", tmp_path)
    return SweepStudy(store, "s", sampler or optuna.samplers.RandomSampler(seed=0), None, ["maximize"], grace)


def test_the_study_names_its_objectives_for_the_dashboard(tmp_path):
    assert study(tmp_path).study.metric_names == ["accuracy"]


def test_claims_never_overshoot_n_trials(tmp_path):
    s = study(tmp_path)
    trials, finished, running = s.claim(batch=4, n_trials=6)
    assert (len(trials), finished, running) == (4, 0, 0)
    more, _, running = s.claim(batch=4, n_trials=6)
    assert (len(more), running) == (2, 4)
    assert s.claim(batch=4, n_trials=6)[0] == []


def after_each_read(s: SweepStudy, monkeypatch, then) -> None:
    """Calls `then()` once, right after the claiming worker's next read of the study's trials:
    another worker acting at that moment, which a loaded machine makes likely."""
    read, pending = s.storage.get_all_trials, [then]

    def read_then_act(*args, **kwargs):
        trials = read(*args, **kwargs)
        while pending:
            pending.pop()()
        return trials

    monkeypatch.setattr(s.storage, "get_all_trials", read_then_act)


def another_worker(tmp_path) -> optuna.Study:
    """The study as another process sees it: its own storage, its own cache."""
    return optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}")


def test_a_trial_another_worker_finishes_while_a_claim_counts_is_counted_once(tmp_path, monkeypatch):
    s = study(tmp_path)
    other = another_worker(tmp_path)
    theirs = other.ask()
    after_each_read(s, monkeypatch, lambda: other.tell(theirs, 0.5))
    trials, finished, running = s.claim(batch=4, n_trials=2)
    assert len(trials) == 1, f"{finished} finished and {running} running: room for one trial"
    assert len(s.trials()) == 2


def test_a_trial_asked_past_n_trials_is_failed_as_surplus_and_not_handed_out(tmp_path, monkeypatch):
    s = study(tmp_path)
    other = another_worker(tmp_path)
    # A worker that asks without the study's lock (greenai's lock is per host: a second machine
    # on a shared sqlite file, or a foreign tool): its trial lands after the claim counted.
    after_each_read(s, monkeypatch, other.ask)
    trials, _, _ = s.claim(batch=4, n_trials=2)
    assert [t.number for t in trials] == [1]
    surplus = s.frozen(2)
    assert surplus.state == TrialState.FAIL
    assert surplus.user_attrs[names.FAILURE_ATTR].startswith("surplus: 2 trials (n_trials=2) were started before it")


def test_a_trial_left_running_by_a_dead_process_is_failed_and_queued_again_once(tmp_path):
    s = study(tmp_path)
    trial = s.study.ask({"lr": FloatDistribution(1e-5, 1e-1)})
    trial.set_user_attr(names.OWNER_ATTR, f"{__import__('socket').gethostname()}:999999")  # no such pid
    s.recover_interrupted({"lr"})
    assert s.frozen(trial.number).state == TrialState.FAIL
    waiting = s.trials(TrialState.WAITING)
    assert len(waiting) == 1 and waiting[0].user_attrs[names.RETRY_ATTR] == trial.number
    s.recover_interrupted({"lr"})
    assert len(s.trials(TrialState.WAITING)) == 1, "queued once only"


def test_a_trial_whose_job_stopped_beating_is_failed_and_its_point_queued_again(tmp_path):
    grace = 8  # long enough that the first look below comes within it, however slow the machine
    s = study(tmp_path, grace=grace)
    trial = s.study.ask({"lr": FloatDistribution(1e-5, 1e-1)})
    trial.set_user_attr(names.OWNER_ATTR, "another-host:123")  # liveness unknown from here
    beat = time.monotonic()
    s.storage.record_heartbeat(
        s.storage.get_trial_id_from_study_id_trial_number(s.storage.get_study_id_from_name("s"), trial.number)
    )
    s.recover_interrupted({"lr"})
    assert time.monotonic() - beat < grace, "looked within the grace period"
    assert s.frozen(trial.number).state == TrialState.RUNNING, "a fresh heartbeat: still alive"
    # Looked at again until the heartbeat is stale, however long the machine takes to get there.
    while s.frozen(trial.number).state == TrialState.RUNNING:
        assert time.monotonic() - beat < 60, "still running a minute after its last heartbeat"
        time.sleep(0.2)
        s.recover_interrupted({"lr"})
    assert time.monotonic() - beat > grace, "failed only once its heartbeat was older than the grace period"
    assert s.frozen(trial.number).state == TrialState.FAIL
    (retry,) = s.trials(TrialState.WAITING)
    assert retry.user_attrs[names.RETRY_ATTR] == trial.number
    assert retry.system_attrs["fixed_params"] == trial.params, "the same point, queued"


def test_stop_rules_budget_and_target(tmp_path):
    s = study(tmp_path)
    for energy, accuracy in ((40.0, 0.6), (50.0, 0.8)):
        t = s.study.ask()
        t.set_user_attr(names.FIGURES_ATTR, {"energy_j": energy, "accuracy": accuracy})
        s.study.tell(t, accuracy)
    assert stop_reason(SweepConfig(), s) is None
    assert stop_reason(SweepConfig(energy_budget_kj=0.09), s) == "energy budget of 0.09 kJ reached (0.090 kJ spent)"
    assert stop_reason(SweepConfig(target_accuracy=0.8), s) == "target accuracy 0.8 reached (0.8000)"


def test_failure_budget():
    budget = FailureBudget(max_failure_rate=0.5, n_trials=4)
    budget.add(2)
    assert not budget.exceeded
    budget.add(1)
    assert budget.exceeded and "3 trials failed" in budget.message()
