"""Unpacking a bundled dataset into the cache is atomic: a failed unpack leaves no partial file."""

from __future__ import annotations

import pytest

from tests.faults import disk_full
from tuneforge.data.sources import bundled_dataset_path


def test_a_failed_unpack_leaves_no_partial_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEFORGE_CACHE", str(tmp_path))
    with disk_full(64 * 1024), pytest.raises(OSError):  # the unpacked reviews are megabytes
        bundled_dataset_path("drug-reviews")
    assert [p.name for p in (tmp_path / "data").iterdir()] == [".drug-reviews.lock"]
    path = bundled_dataset_path("drug-reviews")  # and the next try unpacks it whole
    assert sum(1 for _ in path.open(encoding="utf-8")) == 979
