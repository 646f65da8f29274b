"""Waiting for the event a test needs (a line in a log, a process state), never for a pace."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path


def wait_for(log: Path, text: str, proc: subprocess.Popen, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while text not in log.read_text():
        assert proc.poll() is None, f"exited before '{text}':\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no '{text}' in {seconds} s"
        time.sleep(0.1)
