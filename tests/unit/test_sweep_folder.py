"""The files a sweep's jobs and its sweeping process share."""

from __future__ import annotations

import math
import threading

from greenai.stores.sweep_folder import SweepFolder


def test_parent_run_id_round_trip_and_absence(tmp_path):
    folder = SweepFolder(tmp_path)
    assert folder.parent_run_id() is None
    folder.write_parent_run_id("abc123")
    assert folder.parent_run_id() == "abc123"
    assert not list(tmp_path.rglob("*.partial")), "written aside, then renamed"


def test_progress_totals_count_every_ended_trial_once_even_from_many_writers(tmp_path):
    folder = SweepFolder(tmp_path)

    def trial(i: int) -> None:
        folder.add_progress(
            {
                "round": i,
                "state": "finished" if i % 3 else "failed",
                "accuracy": i / 100 if i % 3 else math.nan,
                "energy_j": 10.0,
            }
        )

    threads = [threading.Thread(target=trial, args=(i,)) for i in range(1, 13)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    totals = folder.add_progress({"round": 13, "state": "pruned", "accuracy": 0.99, "energy_j": None})
    assert totals["trials"] == 13 and totals["energy_j"] == 120.0
    assert totals["best_accuracy"] == 0.11, "only finished trials count for the best accuracy"


def test_results_and_timelines(tmp_path):
    folder = SweepFolder(tmp_path)
    assert folder.results() is None and folder.timeline(3) == []
    folder.write_results({"stop_reason": "completed", "trials": {"complete": 4}})
    assert folder.results() == {"stop_reason": "completed", "trials": {"complete": 4}}
    folder.append_timeline(3, {"event": "begin", "t": 1.0})
    folder.append_timeline(3, {"event": "end", "t": 2.0})
    assert [r["event"] for r in folder.timeline(3)] == ["begin", "end"]
