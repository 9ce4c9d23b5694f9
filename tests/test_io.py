"""Atomic writes: a failure leaves the old file in place and no scratch file behind."""

from __future__ import annotations

import os

import pytest

from compressor.io import atomic_write, atomic_write_text


def test_a_failed_write_leaves_the_previous_file_intact(tmp_path):
    target = atomic_write_text(tmp_path / "model.pt", "old")

    def half_then_fail(file):
        file.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, half_then_fail)
    assert target.read_text() == "old" and [item.name for item in tmp_path.iterdir()] == ["model.pt"]


def test_new_files_get_the_umask_mode_and_replaced_files_keep_theirs(tmp_path):
    previous = os.umask(0o022)
    try:
        fresh = atomic_write_text(tmp_path / "report.html", "x")
        assert fresh.stat().st_mode & 0o777 == 0o644
        fresh.chmod(0o600)
        assert (atomic_write_text(fresh, "y").stat().st_mode & 0o777) == 0o600
    finally:
        os.umask(previous)
