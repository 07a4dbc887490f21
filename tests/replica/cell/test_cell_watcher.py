"""The commit watcher on a real directory with inotify: a write wakes it, re-checks
follow without further events and stop at the end of their series, a new write cuts
a re-check short, and a file moved in under the database's name is reported."""

from __future__ import annotations

import os
import time

import pytest

from replica.cell import watcher


@pytest.fixture
def watch(tmp_path):
    db = tmp_path / "c1.db"
    db.write_bytes(b"")
    w = watcher.CommitWatcher(str(db))
    if not w.native:
        pytest.skip("no inotify here")
    yield w
    w.close()


def write(path) -> None:
    with open(path, "ab") as f:
        f.write(b"x")


def test_idle_wait_times_out_without_waking(watch):
    started = time.monotonic()
    assert watch.wait(0.05) is False
    assert time.monotonic() - started >= 0.04
    assert not watch.settling


def test_a_write_wakes_then_rechecks_run_to_the_end_of_their_series(watch, tmp_path):
    write(tmp_path / "c1.db-wal")
    assert watch.wait(5) is True                       # the write itself
    rechecks = 0
    started = time.monotonic()
    while watch.wait(1.0):                             # no more writes: only re-checks
        rechecks += 1
        assert rechecks <= len(watcher.SETTLE_DELAYS)
    assert rechecks == len(watcher.SETTLE_DELAYS)
    # the series took about its delays, and the last wait ran to its own timeout
    assert time.monotonic() - started >= sum(watcher.SETTLE_DELAYS) + 0.9
    assert not watch.settling


def test_a_write_during_the_rechecks_starts_the_series_again(watch, tmp_path):
    write(tmp_path / "c1.db-wal")
    assert watch.wait(5)
    for _ in range(3):
        assert watch.wait(1.0)                         # re-checks 1..3
    write(tmp_path / "c1.db-wal")
    assert watch.wait(1.0)                             # the new write
    assert watch._settle_step == 0
    rechecks = 0
    while watch.wait(0.2):
        rechecks += 1
    assert rechecks == len(watcher.SETTLE_DELAYS)


def test_other_files_in_the_directory_do_not_wake(watch, tmp_path):
    write(tmp_path / "unrelated.log")
    assert watch.wait(0.05) is False


def test_a_file_moved_in_under_the_name_is_reported(watch, tmp_path):
    write(tmp_path / "c1.db-wal")
    assert watch.wait(5)
    assert watch.replaced() is False
    (tmp_path / "new.db").write_bytes(b"new")
    before = watcher.file_identity(str(tmp_path / "c1.db"))
    os.replace(tmp_path / "new.db", tmp_path / "c1.db")
    assert watch.wait(5)
    assert watch.replaced() is True
    assert watch.replaced() is False                   # reported once
    assert watcher.file_identity(str(tmp_path / "c1.db")) != before
    assert watcher.file_identity(str(tmp_path / "missing.db")) is None
