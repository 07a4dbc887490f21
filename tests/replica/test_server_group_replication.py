"""Server groups travel with the API database's feed: seeded, published, ingested as
rows, verified; a member added (shown while its server is not deleted), a policy
changed and a group deleted reach the replica's one statement."""

from __future__ import annotations

import json

import apsw

from replica.cell import connection as cell_connection
from replica.cell.simulator import DEMO_SERVER_GROUPS, seed_flavors
from replica.store.reader import Reader
from tests.conftest import wait_for
from tests.replica.conftest import read_rows


def _groups(replica: str, minor: int = 64) -> list[dict]:
    conn = apsw.Connection(replica, flags=apsw.SQLITE_OPEN_READONLY)
    try:
        conn.set_busy_timeout(2000)
        return json.loads(Reader(conn).list_server_groups("demo", 1000, 0, minor).body)[
            "server_groups"]
    finally:
        conn.close()


def test_server_groups_are_replicated_with_the_api_database(make_cell, make_ingest,
                                                             replica_path):
    api_db = make_cell("flavors", flavors=True)
    seed_flavors(api_db.db)
    cell = make_cell("cell1")
    cell.populate(40, seed=5)
    api_db.start()
    cell.start()
    ing = make_ingest([api_db.feed(), cell.feed()])
    ing.start()
    status = ing.wait_caught_up([api_db, cell])
    assert status["flavors"]["server_groups"] == len(DEMO_SERVER_GROUPS)
    wait_for(lambda: [g["name"] for g in _groups(replica_path)] == [
        name for name, _policy, _rules in DEMO_SERVER_GROUPS], 10, what="the groups")
    live, gone = (u for (u,) in read_rows(
        replica_path, "SELECT uuid FROM servers WHERE deleted = 0 ORDER BY uuid LIMIT 2"))

    api = cell_connection.open_cell(api_db.db)
    with api:
        api.executemany("INSERT INTO instance_group_member (instance_uuid, group_id) "
                        "SELECT ?, id FROM instance_groups WHERE name = 'web-spread'",
                        [(live,), (gone,), ("no-such-server",)])
        api.execute("UPDATE instance_group_policy SET policy = 'affinity' WHERE group_id = "
                    "(SELECT id FROM instance_groups WHERE name = 'db-pack')")
    wait_for(lambda: _groups(replica_path)[0]["members"] == [live, gone], 10,
             what="the members")
    assert _groups(replica_path)[1]["policy"] == "affinity"
    assert _groups(replica_path, 1)[1]["policies"] == ["affinity"]

    cells = cell_connection.open_cell(cell.db)
    with cells:      # Nova deletes a server: the group no longer shows it
        cells.execute("UPDATE instances SET deleted = id, vm_state = 'deleted' "
                      "WHERE uuid = ?", (gone,))
    wait_for(lambda: _groups(replica_path)[0]["members"] == [live], 10,
             what="the deleted server left out")
    with api:
        api.execute("DELETE FROM instance_group_member")
        api.execute("DELETE FROM instance_group_policy WHERE group_id = "
                    "(SELECT id FROM instance_groups WHERE name = 'batch')")
        api.execute("DELETE FROM instance_groups WHERE name = 'batch'")
    wait_for(lambda: [g["name"] for g in _groups(replica_path)] == ["web-spread", "db-pack"],
             10, what="the group deleted")
    api.close()
    cells.close()
    job = ing.client.wait_job(ing.client.verify("flavors"), timeout=60)
    assert job["state"] == "done" and job["result"]["cells"]["flavors"]["differing"] == []
