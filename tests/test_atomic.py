"""Folder replacement keeps the old folder when the new one cannot be moved into place."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuneforge import atomic


def test_a_failed_swap_puts_the_old_folder_back(tmp_path, monkeypatch):
    target = tmp_path / "adapter"
    target.mkdir()
    (target / "weights").write_text("old")
    real = Path.rename

    def rename(self: Path, to: Path) -> Path:
        if self.name.endswith(".tmp"):  # the new folder's move into place fails (EIO, a full journal, ...)
            raise OSError(5, "Input/output error")
        return real(self, to)

    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(OSError), atomic.replace_folder(target) as tmp:
        (tmp / "weights").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]
    assert (target / "weights").read_text() == "old"


def _dead_pid() -> int:
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_killed_writers_leftovers_are_removed_by_the_next_write(tmp_path):
    # A prepare or a checkpoint killed with SIGKILL runs no cleanup: its temporary folder and files stay.
    dead = _dead_pid()
    stale_dir = tmp_path / f".data.{dead}.abc123.tmp"
    stale_dir.mkdir()
    (stale_dir / "train.jsonl").write_text("half")
    stale_file = tmp_path / f".recipe.yaml.{dead}.xyz.tmp"
    stale_file.write_text("half")
    with atomic.replace_folder(tmp_path / "data") as tmp:
        (tmp / "train.jsonl").write_text("whole")
    atomic.write_text(tmp_path / "recipe.yaml", "model: {}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "recipe.yaml"]


def test_a_live_writers_work_in_progress_is_left_alone(tmp_path):
    import os

    busy = tmp_path / f".data.{os.getppid()}.abc123.tmp"  # a live process (this test's parent) is writing
    busy.mkdir()
    other = tmp_path / ".database.1.tmp"  # another target's name, not ours
    other.mkdir()
    with atomic.replace_folder(tmp_path / "data") as tmp:
        (tmp / "x").write_text("1")
    assert busy.exists() and other.exists()
