"""The background checkpoint really copies the WAL back, and the WAL then starts over."""

from __future__ import annotations

import os

import apsw

from replica.store import connection


def _write(conn: apsw.Connection, rows: int) -> None:
    with conn:
        conn.executemany("INSERT INTO dead_letters (received_at, cell, reason, message, "
                         "payload) VALUES (0, 'c', 'r', 'm', randomblob(20000))",
                         [()] * rows)


def test_a_fresh_connection_checkpoints_the_writers_wal_and_the_wal_starts_over(tmp_path):
    path = str(tmp_path / "replica.db")
    writer = connection.open_writer(path)
    checkpointer = apsw.Connection(path)       # as ingest's checkpointer opens it
    try:
        _write(writer, 200)
        frames, copied = connection.checkpoint_passive(checkpointer)
        assert frames > 200 and copied == frames
        _write(writer, 1)          # the next commit starts the WAL from its beginning
        frames_after, copied_after = connection.checkpoint_passive(checkpointer)
        assert 0 < frames_after < 10 and copied_after == frames_after
        assert os.path.getsize(path + "-wal") <= connection.WAL_SIZE_LIMIT_BYTES
        assert writer.execute("SELECT count(*) FROM dead_letters").fetchall() == [(201,)]
    finally:
        checkpointer.close()
        writer.close()


def test_the_writer_limits_the_wal_file_size(tmp_path):
    writer = connection.open_writer(str(tmp_path / "replica.db"))
    try:
        limit = writer.execute("PRAGMA journal_size_limit").fetchall()[0][0]
        assert limit == connection.WAL_SIZE_LIMIT_BYTES
    finally:
        writer.close()
