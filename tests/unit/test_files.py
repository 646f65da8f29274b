"""Atomic writes by several processes at once (four independent sweeps started in one second
share Hydra's sweep folder and write its optimization_results.yaml together)."""

from __future__ import annotations

import multiprocessing

import pytest

from greenai.files import write_atomic


def _write_many(path: str, text: str, start: multiprocessing.synchronize.Barrier) -> None:
    from pathlib import Path

    start.wait()
    for _ in range(200):
        write_atomic(Path(path), text)


def test_writers_of_one_file_at_once_never_fail_and_leave_one_whole_file(tmp_path):
    target = tmp_path / "optimization_results.yaml"
    texts = [f"writer {i}\n" * 1000 for i in range(4)]
    start = multiprocessing.get_context("spawn").Barrier(len(texts))
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_write_many, args=(str(target), text, start)) for text in texts]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=300)
    assert [w.exitcode for w in writers] == [0, 0, 0, 0], "a writer failed (a temporary file renamed from under it)"
    assert target.read_text() in texts, "one writer's whole text"
    assert [p.name for p in tmp_path.iterdir()] == [target.name], "no temporary file left behind"


def test_a_failed_write_leaves_neither_file(tmp_path, monkeypatch):
    target = tmp_path / "kept.json"
    target.write_text("old")

    def full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.replace", full)
    with pytest.raises(OSError):
        write_atomic(target, "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["kept.json"]
