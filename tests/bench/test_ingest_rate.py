"""The ingest rate measurement on a tiny cell: both ways the publisher can feed ingest
(pre-rendered rows, entities only) apply every event and leave the same rows."""

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
