"""Real store servers the tests start on loopback, each on a free port, and stop or kill on
purpose: an MLflow tracking server and a PostgreSQL of the test's own (not the shared one other
tests use, so stopping it disturbs no one)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from conftest import REPO


def as_root(*command: str, env: dict[str, str] | None = None) -> str:
    """Run a command as root (through sudo where the tests are not root); its last output line."""
    prefix = [] if os.geteuid() == 0 else ["sudo", "-E"]
    proc = subprocess.run([*prefix, *command], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, f"{' '.join(command)} failed:\n{proc.stdout}\n{proc.stderr}"
    lines = proc.stdout.strip().splitlines()
    return lines[-1] if lines else ""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class MlflowServer:
    """`mlflow server` over a sqlite store in `folder`; stop() kills it (no goodbye to its
    clients, as a crash or a pulled cable), start() brings it back on the same port and store."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        command = [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.folder / 'server.db'}",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        with (self.folder / "server.log").open("a") as out:
            # Its own process group: uvicorn runs as a child of `mlflow server`.
            self.proc = subprocess.Popen(
                command, cwd=self.folder, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=1):
                    return
            except OSError:
                assert self.proc.poll() is None, (self.folder / "server.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "mlflow server did not answer in 180 s"
                time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None


class Postgres:
    """A PostgreSQL server of this test's own, started and stopped by scripts/local-postgres.sh.
    Its folder is directly under /tmp: the server runs as the postgres user, who cannot enter
    pytest's private temporary folders."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="greenai-test-pg-"))
        self.env = {**os.environ, "GREENAI_PG_DIR": str(self.folder), "GREENAI_PG_PORT": str(free_port())}
        self.script = str(REPO / "scripts" / "local-postgres.sh")
        self.url = ""

    def start(self) -> str:
        self.url = as_root(self.script, "start", env=self.env)
        return self.url

    def stop(self) -> None:
        as_root(self.script, "stop", env=self.env)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)
