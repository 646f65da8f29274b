"""A small tmpfs that a test fills on purpose: the disk under a store, or Hydra's output folder."""

from __future__ import annotations

import errno
import subprocess
from pathlib import Path

import pytest


class SmallDisk:
    """A tmpfs mounted for one test: `fill` takes every free block, `free` gives them back."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.filler = path / "filler"

    def fill(self) -> None:
        chunk = b"\0" * 65536
        with self.filler.open("ab", buffering=0) as out:
            try:
                while True:
                    out.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
        with self.filler.open("ab", buffering=0) as out:  # the last partial block, a byte at a time
            try:
                while True:
                    out.write(b"\0")
            except OSError:
                pass

    def free(self) -> None:
        self.filler.unlink()


@pytest.fixture
def small_disk(tmp_path):
    from servers import as_root  # servers imports conftest, which registers this fixture

    mount = tmp_path / "small-disk"
    mount.mkdir()
    as_root("mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount))
    try:
        yield SmallDisk(mount)
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            as_root("umount", "-l", str(mount))  # a process still holding a file there: detach it
