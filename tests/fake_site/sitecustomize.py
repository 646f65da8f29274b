"""Python runs this at start-up in every process whose PYTHONPATH holds this folder. Where
GREENAI_FAKE_COUNTERS is set (tests/fake_zeus.counters_for_processes), Zeus sees the fake RAPL
counter that the test's other processes see too; elsewhere it does nothing."""

import json
import os
import sys

if os.environ.get("GREENAI_FAKE_COUNTERS"):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import fake_zeus

    fake_zeus.install_in_process(json.loads(os.environ["GREENAI_FAKE_COUNTERS"]))

if os.environ.get("GREENAI_TEST_REPLAY") == "fused-runner-192cb76":
    # A defect replayed to show the ledger catches it: the fused runner of commit 192cb76
    # recorded a trial's members one by one and stopped at the first the pruner stopped.
    import greenai.trial.runner as runner

    def _stops_at_the_first_pruned(trial, results, epochs):  # type: ignore[no-untyped-def]
        for repeat, member in enumerate(trial.members):
            if member in results and trial.record.epoch(repeat * epochs + results[member].epoch, results[member]):
                return True
        return False

    runner._record_group_epoch = _stops_at_the_first_pruned
