"""Availability zones' facts travel in the feed of the database that holds them: a
cell's services (the service kind) and the API database's aggregates (the aggregate
kind) are published, ingested as rows, verified, and a change of either reaches the
zones the replica's one statement renders."""

from __future__ import annotations

import json

import apsw

from replica.cell import connection as cell_connection
from replica.cell.simulator import seed_flavors
from replica.store.reader import Reader
from tests.conftest import wait_for
from tests.replica.conftest import read_rows


def _zones(replica: str, detail: bool = False) -> list[tuple[str, bool]]:
    conn = apsw.Connection(replica, flags=apsw.SQLITE_OPEN_READONLY)
    try:
        conn.set_busy_timeout(2000)
        body = json.loads(Reader(conn).availability_zones(detail).body)
        return [(z["zoneName"], z["zoneState"]["available"])
                for z in body["availabilityZoneInfo"]]
    finally:
        conn.close()


def _count(replica: str, table: str) -> int:
    return read_rows(replica, f"SELECT count(*) FROM {table}")[0][0]


def test_zones_follow_services_and_aggregates(make_cell, make_ingest, replica_path):
    api_db = make_cell("flavors", flavors=True)
    seed_flavors(api_db.db)
    cell = make_cell("cell1")
    cell.populate(120, seed=3)           # hosts compute-0000 .. compute-0003
    api_db.start()
    cell.start()
    ing = make_ingest([api_db.feed(), cell.feed()])
    ing.start()
    status = ing.wait_caught_up([api_db, cell])
    assert status["cell1"]["services"] == 4
    assert status["flavors"]["aggregates"] == 2
    # compute-0002 is in the demo's az-west, the others in no zone (Nova's "nova")
    wait_for(lambda: _zones(replica_path) == [("az-west", True), ("nova", True)], 10,
             what="the zones")

    cells = cell_connection.open_cell(cell.db)
    with cells:
        cells.execute("UPDATE services SET disabled = 1 WHERE host = 'compute-0002'")
    wait_for(lambda: _zones(replica_path) == [("nova", True), ("az-west", False)], 10,
             what="az-west unavailable with its only service disabled")

    api = cell_connection.open_cell(api_db.db)
    with api:
        api.execute("INSERT INTO aggregate_hosts (host, aggregate_id) SELECT 'compute-0001', "
                    "id FROM aggregates WHERE name = 'west-racks'")
    wait_for(lambda: _zones(replica_path) == [("az-west", True), ("nova", True)], 10,
             what="compute-0001 moved into az-west")
    detail = _zones(replica_path, detail=True)
    assert detail == [("az-west", True), ("nova", True)]

    with api:
        api.execute("DELETE FROM aggregate_metadata")
        api.execute("DELETE FROM aggregate_hosts")
        api.execute("DELETE FROM aggregates")
    wait_for(lambda: _count(replica_path, "aggregates") == 0, 10,
             what="the aggregates gone")
    assert _zones(replica_path) == [("nova", True)]
    cells.close()
    api.close()
    for name in ("flavors", "cell1"):
        job = ing.client.wait_job(ing.client.verify(name), timeout=60)
        assert job["state"] == "done" and job["result"]["cells"][name]["differing"] == []
