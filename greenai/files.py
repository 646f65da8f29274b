"""Writing a file whole or not at all, also where several processes write it at once."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: str | bytes) -> None:
    """`data` into `path`, atomically: a reader sees the old file or the whole new one. Each
    writer writes its own temporary file beside it (processes of one sweep that write the same
    file at once would otherwise rename one temporary file from under each other), then
    renames it over `path`. On an error (a full disk) neither is left behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data.encode() if isinstance(data, str) else data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
