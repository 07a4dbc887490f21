"""Under steady churn the WAL stays bounded: ingest's writer commits during nearly every
background checkpoint, and without more the WAL never starts over (it grew 26 MB/s)."""

from __future__ import annotations

import os
import random
import threading
import time

import gevent

from replica import feed, ingest as ingest_module
from replica.store import connection

from tests.replica.conftest import live_ingest, make_server

RESTART_BYTES = 2 << 20        # small, so that the test is short
SERVERS = 300
SECONDS = 6.0


def _read_until(path: str, keys: list[str], stop: threading.Event, seen: list,
                errors: list) -> None:
    """A reader as the API workers are: one statement per read, a full scan now and
    then (a longer snapshot)."""
    conn = connection.open_reader(path)
    try:
        while not stop.is_set():
            try:
                if random.random() < 0.05:
                    seen.append(conn.execute("SELECT count(*) FROM servers").fetchall()[0][0])
                else:
                    conn.execute("SELECT seq FROM servers WHERE uuid = ?",
                                 (random.choice(keys),)).fetchall()
                    seen.append(1)
            except Exception as exc:     # noqa: BLE001 - any error fails the test
                errors.append(exc)
    finally:
        conn.close()


def test_the_wal_stays_bounded_under_steady_churn_with_readers(replica_path, monkeypatch):
    monkeypatch.setattr(connection, "WAL_RESTART_BYTES", RESTART_BYTES, raising=False)
    monkeypatch.setattr(ingest_module, "CHECKPOINT_INTERVAL", 0.2)
    steps: list[str] = []     # the checkpointer's flushes and RESTARTs, in order

    def recorded(name, fn):
        def step(*args):
            steps.append(name)
            return fn(*args)
        return step

    monkeypatch.setattr(connection, "flush_to_disk",
                        recorded("flush", connection.flush_to_disk))
    monkeypatch.setattr(connection, "checkpoint_restart",
                        recorded("restart", connection.checkpoint_restart))
    ing = live_ingest(replica_path)
    link = ing.links["c1"]
    keys = [make_server()["uuid"] for _ in range(SERVERS)]
    seq = 0

    def batch(n: int) -> None:
        nonlocal seq
        events = []
        for _ in range(n):
            seq += 1
            key = random.choice(keys)
            events.append(feed.Event(seq, feed.KIND_SERVER, feed.OP_UPSERT, key,
                                     make_server(key, name=f"server-{seq}")))
        assert ing.accept(link, events) == "next"
        ing.commit()

    batch(SERVERS)
    checkpointer = gevent.spawn(ing._checkpointer)
    stop, errors, seen = threading.Event(), [], []
    readers = [threading.Thread(target=_read_until,
                                args=(replica_path, keys, stop, seen, errors))
               for _ in range(2)]
    for reader in readers:
        reader.start()
    wal, biggest = replica_path + "-wal", 0
    try:
        began = time.monotonic()
        while time.monotonic() - began < SECONDS:
            batch(20)
            gevent.sleep(0.001)         # as a feed lets the other greenlets run
            biggest = max(biggest, os.path.getsize(wal))
    finally:
        stop.set()
        for reader in readers:
            reader.join()
        checkpointer.kill()
        ing.conn.close()
    assert biggest < 4 * RESTART_BYTES, f"the WAL grew to {biggest / 2**20:.1f} MiB"
    assert not errors, errors[:3]
    assert len(seen) > 100
    assert ing.writer is not None and seq > 10 * SERVERS
    assert ing.wal_restarts >= 2
    assert ing.wal_restart_pause_max < 0.5
    # Each RESTART (writes held) comes right after a flush of what the passive
    # checkpoints copied (writes going on), so the hold does not wait for the disk.
    assert steps.count("restart") >= 2
    assert all(steps[i - 1] == "flush" for i, step in enumerate(steps) if step == "restart")


def test_a_flush_syncs_the_database_and_its_wal(replica_path, monkeypatch):
    writer = connection.open_writer(replica_path)
    try:
        with writer:
            writer.execute("CREATE TABLE t (v TEXT)")
            writer.execute("INSERT INTO t VALUES ('x')")
        synced = []
        real = os.fdatasync

        def fdatasync(fd):
            synced.append(os.readlink(f"/proc/self/fd/{fd}"))
            real(fd)

        monkeypatch.setattr(connection.os, "fdatasync", fdatasync)
        connection.flush_to_disk(replica_path)
        real_path = os.path.realpath(replica_path)
        assert synced == [real_path, real_path + "-wal"]
    finally:
        writer.close()
    synced.clear()
    if os.path.exists(replica_path + "-wal"):     # closed cleanly: SQLite removes it
        os.remove(replica_path + "-wal")
    connection.flush_to_disk(replica_path)       # no WAL (closed cleanly): the file alone
    assert synced == [os.path.realpath(replica_path)]


def test_the_wal_backlog_is_what_no_checkpoint_has_copied_back_yet(replica_path, monkeypatch):
    # After a first load of a large cell the WAL holds gigabytes that a checkpoint copies
    # back while reads go on, slower: status says how much is left.
    monkeypatch.setattr(ingest_module, "CHECKPOINT_INTERVAL", 0.05)
    ing = live_ingest(replica_path)
    link = ing.links["c1"]
    reader = connection.open_reader(replica_path)
    checkpointer = None
    try:
        events = [feed.Event(seq, feed.KIND_SERVER, feed.OP_UPSERT, server["uuid"], server)
                  for seq, server in enumerate((make_server() for _ in range(SERVERS)), 1)]
        assert ing.accept(link, events[:1]) == "next"
        ing.commit()                           # the WAL holds frames the reader sees
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM servers").fetchall()   # holds this snapshot
        assert ing.accept(link, events[1:]) == "next"
        ing.commit()
        assert ing.status()["wal_backlog_bytes"] > 0
        checkpointer = gevent.spawn(ing._checkpointer)
        # a checkpoint has copied what the reader's snapshot allows, and no more
        _wait_in_hub(lambda: ing.wal_copied > 0, "a checkpoint")
        held = ing.status()
        assert 0 < held["wal_backlog_bytes"] <= held["wal_bytes"]
        reader.execute("COMMIT")
        _wait_in_hub(lambda: ing.status()["wal_backlog_bytes"] == 0, "the backlog copied")
        status = ing.status()
        assert status["wal_backlog_bytes"] == 0 < status["wal_bytes"]
    finally:
        if checkpointer is not None:
            checkpointer.kill()
        reader.close()
        ing.conn.close()


def _wait_in_hub(condition, what: str, timeout: float = 10.0) -> None:
    """Until ``condition()``, letting the hub run the checkpointer meanwhile."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        gevent.sleep(0.02)


def test_the_checkpointer_grows_the_database_file_in_chunks(replica_path):
    # A file whose size changes at every full checkpoint makes that checkpoint's sync
    # commit the filesystem's journal too, with ingest's writes held.
    writer = connection.open_writer(replica_path)
    checkpointer = connection.open_writer(replica_path)
    chunk = 1 << 20
    connection.grow_in_chunks(checkpointer, chunk)
    try:
        with writer:
            writer.execute("CREATE TABLE t (v TEXT)")
        sizes = set()
        for _ in range(3):
            with writer:
                writer.executemany("INSERT INTO t VALUES (?)", [("x" * 1000,)] * 300)
            connection.checkpoint_restart(checkpointer)
            sizes.add(os.path.getsize(replica_path))
        assert all(size % chunk == 0 for size in sizes), sizes
        used = writer.execute("PRAGMA page_count").fetchone()[0] * connection.PAGE_SIZE
        assert os.path.getsize(replica_path) == -(-used // chunk) * chunk
    finally:
        checkpointer.close()
        writer.close()
