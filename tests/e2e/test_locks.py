"""Cross-process locks: a lock file held by one process keeps another out until released."""

from __future__ import annotations

import fcntl
import subprocess
import sys

import pytest

from greenai.stores.locks import file_lock

HOLD = """
import sys, time
from pathlib import Path
from greenai.stores.locks import file_lock
with file_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(0.5)
    Path(sys.argv[2]).write_text("done")  # the last thing it does while holding the lock
"""


def test_a_lock_file_held_by_another_process_is_waited_for(tmp_path):
    path, done = tmp_path / "store.db.greenai-lock", tmp_path / "done"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path), str(done)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with file_lock(path):
        assert done.is_file(), "the lock was only had once the other process's block had ended"
    assert holder.wait(timeout=30) == 0


def free(path) -> bool:
    """Whether nobody holds the lock file: a non-blocking try, which answers at once."""
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(handle, fcntl.LOCK_UN)
        return True


def test_a_lock_is_released_when_its_block_raises(tmp_path):
    path = tmp_path / "x.greenai-lock"
    with pytest.raises(RuntimeError, match="inside"):
        with file_lock(path):
            assert not free(path), "held inside the block"
            raise RuntimeError("inside")
    assert free(path)
