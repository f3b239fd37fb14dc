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
