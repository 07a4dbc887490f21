"""The ingest rate measurement on a tiny cell: both ways the publisher can feed ingest
(pre-rendered rows, entities only) apply every event and leave the same rows."""

import os

import apsw

from bench import ingest_rate
from bench.stack import populate_cell
from replica import render


def _rows(path: str) -> list[tuple]:
    conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return conn.execute(f"SELECT {', '.join(render.SERVER_COLUMNS)} FROM servers "
                            "ORDER BY uuid").fetchall()
    finally:
        conn.close()


def test_both_ways_apply_every_event_and_leave_the_same_rows(tmp_path):
    cell = str(tmp_path / "cell.db")
    populate_cell(cell, 120, 3, seed=7, log=lambda text: None)
    results, rows = {}, {}
    for rendered in (False, True):
        workdir = tmp_path / ("rendered" if rendered else "entities")
        workdir.mkdir()
        results[rendered] = ingest_rate.measure(cell, str(workdir), 300, 100, rendered=rendered)
        rows[rendered] = _rows(str(workdir / "ingest-rate.db"))
    for result in results.values():
        assert result["events"] == 300 and result["distinct_servers"] == 120
        assert result["position_seq"] == 300 and result["upserts_per_cpu_s"] > 0
    with_rows, without = results[True]["cpu_us_per_upsert"], results[False]["cpu_us_per_upsert"]
    assert with_rows["row_check"] > 0 and with_rows["render"] < 0.5 < without["render"]
    assert without["row_check"] < 0.5
    assert results[True]["message_bytes_mean"] > results[False]["message_bytes_mean"]
    assert len(rows[True]) == 120 and rows[True] == rows[False]


def test_a_replica_holding_other_servers_keeps_them_and_applies_every_event(tmp_path):
    cell = str(tmp_path / "cell.db")
    populate_cell(cell, 60, 3, seed=7, log=lambda text: None)
    result = ingest_rate.measure(cell, str(tmp_path), 200, 100, held=250)
    assert result["events"] == 200 and result["distinct_servers"] == 60
    assert result["held_servers"] == 250 and result["position_seq"] == 200
    conn = apsw.Connection(str(tmp_path / "ingest-rate.db"), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        owners = dict(conn.execute("SELECT cell, count(*) FROM servers GROUP BY cell"))
        held = conn.execute("SELECT uuid, d_base FROM servers WHERE cell = ?",
                            (ingest_rate.HELD_FEED,)).fetchall()
    finally:
        conn.close()
    assert owners == {ingest_rate.CELL: 60, ingest_rate.HELD_FEED: 250}
    # each held server is a whole row of its own: its uuid is in its rendered body
    assert len({uuid for uuid, _ in held}) == 250
    assert all(uuid in body for uuid, body in held)
    assert not any(name.startswith("ingest-held") for name in os.listdir(tmp_path))
