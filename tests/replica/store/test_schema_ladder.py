"""The replica schema ladder: each step once, in order; step 2 sends every cell to resync."""

from __future__ import annotations

import apsw
import pytest

from replica.store import schema


def _at_step(path: str, step: int) -> apsw.Connection:
    conn = apsw.Connection(path)
    for number, ddl in enumerate(schema.STEPS[:step], start=1):
        with conn:
            conn.execute(ddl)
            conn.execute(f"PRAGMA user_version = {number}")
    return conn


def test_a_new_database_gets_every_step(tmp_path):
    conn = apsw.Connection(str(tmp_path / "r.db"))
    assert schema.migrate(conn) == len(schema.STEPS) == schema.user_version(conn)
    assert schema.migrate(conn) == len(schema.STEPS)        # a second run changes nothing


def test_step_2_marks_every_position_as_of_another_epoch(tmp_path):
    conn = _at_step(str(tmp_path / "r.db"), 1)
    conn.execute("INSERT INTO positions (cell, epoch, seq, applied_at) VALUES "
                 "('c1', 'e1', 42, 0), ('c2', 'e2', 7, 0)")
    schema.migrate(conn)
    rows = conn.execute("SELECT cell, epoch, seq FROM positions ORDER BY cell").fetchall()
    # The ingest's hello then sees an epoch change and resyncs the cell (its rows hold
    # hashes of the old function), as it does for a rebuilt cell database.
    assert rows == [("c1", "rehash-e1", 42), ("c2", "rehash-e2", 7)]


def test_a_database_newer_than_the_build_is_refused(tmp_path):
    conn = apsw.Connection(str(tmp_path / "r.db"))
    conn.execute(f"PRAGMA user_version = {len(schema.STEPS) + 1}")
    with pytest.raises(RuntimeError, match="newer than this build"):
        schema.migrate(conn)
