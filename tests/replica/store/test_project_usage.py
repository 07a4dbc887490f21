"""The per-project usage (schema steps 10 and 12, replica/store/usage.py) follows the
server rows in the writer's own transactions, whatever writes them: event upserts, soft
deletion and soft-delete, a resize, a project change, tombstones, a resync's swap, a key
that moves to another cell. It always equals a recount of the rows as Nova counts them
(live, not soft-deleted: count, vcpus, memory)."""

from __future__ import annotations

import random

from replica import feed, render
from replica.position import Position
from replica.store.connection import open_writer
from replica.store.writer import Change, Writer
from tests.api import entities as E

RECOUNT = ("SELECT project_id, count(*), sum(json_extract('{' || substr(d_flavor_v247, 2) "
           "|| '}', '$.flavor.vcpus')), sum(json_extract('{' || substr(d_flavor_v247, 2) "
           "|| '}', '$.flavor.ram')) FROM servers WHERE deleted = 0 "
           "AND vm_state IS NOT 'soft-delete' AND in_cell = 1 GROUP BY project_id "
           "ORDER BY project_id")
USAGE = ("SELECT project_id, instances, cores, ram FROM project_usage "
         "WHERE instances != 0 OR cores != 0 OR ram != 0 ORDER BY project_id")


def _up(cell, seq, entity):
    return Change(feed.KIND_SERVER, entity["uuid"], cell, render.server_row(cell, seq, entity))


def _gone(cell, uuid):
    return Change(feed.KIND_SERVER, uuid, cell, None)


def _usage(conn):
    return [tuple(row) for row in conn.execute(USAGE).fetchall()]


def _recount(conn):
    return [tuple(row) for row in conn.execute(RECOUNT).fetchall()]


def test_usage_follows_each_kind_of_write(replica_path):
    conn = open_writer(replica_path)
    writer = Writer(conn)
    small = E.flavor_of_server("2", "m1.small", vcpus=2, memory_mb=2048)
    a, b, c = E.server(1), E.server(2, flavor=small), E.server(3, project_id=E.OTHER_PROJECT)
    writer.apply([_up("c1", 1, a), _up("c1", 2, b), _up("c1", 3, c)],
                 [Position("c1", "e", 3)])
    assert _usage(conn) == [(E.PROJECT, 2, 3, 2560), (E.OTHER_PROJECT, 1, 1, 512)]
    assert _usage(conn) == _recount(conn)
    # soft-delete (restorable), then soft deletion, a resize, a move to another project
    writer.apply([_up("c1", 4, dict(a, vm_state="soft-delete"))])
    assert dict((p, n) for p, n, _c, _r in _usage(conn))[E.PROJECT] == 1
    writer.apply([_up("c1", 5, dict(a, deleted=True, vm_state="deleted"))])
    writer.apply([_up("c1", 6, dict(b, flavor=E.flavor_of_server(vcpus=8, memory_mb=8192)))])
    assert (E.PROJECT, 1, 8, 8192) in _usage(conn)
    writer.apply([_up("c1", 7, dict(c, project_id=E.PROJECT))])
    assert _usage(conn) == [(E.PROJECT, 2, 9, 8704)] == _recount(conn)
    # a tombstone, then a resync that keeps one server and brings another
    writer.apply([_gone("c1", a["uuid"])])
    writer.stage_begin("c1")
    writer.keep(feed.KIND_SERVER, [b["uuid"]])
    d = E.server(4, project_id=E.OTHER_PROJECT)
    writer.stage(feed.KIND_SERVER, [render.server_row("c1", 20, d)])
    writer.swap(Position("c1", "e2", 20))
    assert _usage(conn) == sorted(_recount(conn)) == sorted(
        [(E.PROJECT, 1, 8, 8192), (E.OTHER_PROJECT, 1, 1, 512)])
    conn.close()


def test_usage_equals_a_recount_after_random_churn(replica_path):
    conn = open_writer(replica_path)
    writer = Writer(conn)
    rng = random.Random(11)
    projects = [E.PROJECT, E.OTHER_PROJECT, "p3"]
    flavors = [E.flavor_of_server(str(n), f"f{n}", vcpus=n, memory_mb=256 * n)
               for n in range(1, 5)]
    servers = {}
    for seq in range(1, 400):
        n = rng.randrange(40)
        if n in servers and rng.random() < 0.15:
            writer.apply([_gone("c1", servers.pop(n)["uuid"])])
            continue
        entity = E.server(n, project_id=rng.choice(projects), flavor=rng.choice(flavors),
                          vm_state=rng.choice(["active", "stopped", "soft-delete", "error"]))
        if rng.random() < 0.2:
            entity.update(deleted=True, vm_state="deleted")
        if rng.random() < 0.15:
            entity.update(instance_name="")   # a build request: Nova counts it nowhere
        servers[n] = entity
        writer.apply([_up("c1", seq, entity)], [Position("c1", "e", seq)])
    assert _usage(conn) == _recount(conn)
    assert _usage(conn)                      # the churn left some live servers
    conn.close()


def test_a_stable_column_change_is_written_beside_a_usage_change(replica_path):
    """A batch where one row's stable column changes (its upsert leaves it) while another
    changes usage still writes the first row."""
    conn = open_writer(replica_path)
    writer = Writer(conn)
    a, b = E.server(1), E.server(2)
    writer.apply([_up("c1", 1, a), _up("c1", 2, b)])
    writer.apply([_up("c1", 3, dict(a, deleted=True, vm_state="deleted")),
                  _up("c1", 4, dict(b, vm_state="soft-delete"))])
    assert conn.execute("SELECT deleted, seq FROM servers WHERE uuid = ?",
                        (a["uuid"],)).fetchall() == [(1, 3)]
    assert _usage(conn) == _recount(conn) == []
    conn.close()


def test_usage_follows_a_key_between_cells(replica_path):
    """A server whose row another cell's feed takes over counts once; a tombstone from a
    cell that no longer owns the row removes nothing (the row stays, so does its usage);
    several changes of one key in one batch count as the last."""
    conn = open_writer(replica_path)
    writer = Writer(conn)
    a = E.server(1)
    writer.apply([_up("c1", 1, a)])
    writer.apply([_up("c2", 1, dict(a, flavor=E.flavor_of_server(vcpus=4, memory_mb=4096)))])
    assert _usage(conn) == [(E.PROJECT, 1, 4, 4096)] == _recount(conn)
    writer.apply([_gone("c1", a["uuid"])])
    assert _usage(conn) == [(E.PROJECT, 1, 4, 4096)] == _recount(conn)
    b = E.server(2)
    writer.apply([_up("c1", 2, b), _up("c1", 3, dict(b, vm_state="soft-delete")),
                  _up("c1", 4, dict(b, project_id=E.OTHER_PROJECT))])
    assert _usage(conn) == _recount(conn) == sorted(
        [(E.PROJECT, 1, 4, 4096), (E.OTHER_PROJECT, 1, 1, 512)])
    writer.apply([_gone("c2", a["uuid"]), _gone("c1", b["uuid"])])
    assert _usage(conn) == _recount(conn) == []
    assert conn.execute("SELECT count(*) FROM server_usage").fetchall() == [(0,)]
    conn.close()


def test_a_replica_of_the_trigger_schema_keeps_its_usage(tmp_path):
    """A replica made before step 14 (usage kept by triggers) is migrated: the triggers
    go, the usage is made again from the rows held, and the writer keeps it from then."""
    import apsw

    from replica.store import schema
    path = str(tmp_path / "old.db")
    conn = apsw.Connection(path)
    for number, ddl in enumerate(schema.STEPS[:11], start=1):
        with conn:
            conn.execute(ddl)
            conn.execute(f"PRAGMA user_version = {number}")
    servers = [E.server(n, project_id=[E.PROJECT, E.OTHER_PROJECT][n % 2]) for n in range(6)]
    columns = render.SERVER_COLUMNS
    with conn:       # the rows as an older writer wrote them: its triggers kept the usage
        conn.executemany(f"INSERT INTO servers ({', '.join(columns)}) VALUES "
                         f"({', '.join('?' * len(columns))})",
                         [render.server_row("c1", n + 1, s) for n, s in enumerate(servers)])
        conn.execute("UPDATE servers SET vm_state = 'soft-delete' WHERE uuid = ?",
                     (servers[0]["uuid"],))
    before = _usage(conn)
    assert before == _recount(conn) and before
    conn.close()
    conn = open_writer(path)                   # migrates
    assert schema.user_version(conn) == len(schema.STEPS)
    assert conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND "
                        "name LIKE 'project_usage%'").fetchall() == [(0,)]
    assert _usage(conn) == before
    writer = Writer(conn)
    writer.apply([_gone("c1", servers[1]["uuid"]), _up("c1", 10, dict(servers[0]))])
    assert _usage(conn) == _recount(conn)
    conn.close()


def test_flavor_size_of_the_fragment():
    from replica.store.usage import flavor_size
    row = render.server_row("c1", 1, E.server(1, flavor=E.flavor_of_server(
        vcpus=3, memory_mb=3072, extra_specs={"vcpus": "9", "ram": "1"})))
    assert flavor_size(row[render.SERVER_COLUMNS.index("d_flavor_v247")]) == (3, 3072)
    assert flavor_size(None) == flavor_size("") == (0, 0)
    # another spelling of the same fragment: read as JSON
    assert flavor_size(',"flavor": {"ram": 64, "vcpus": 2}') == (2, 64)


def test_another_feeds_tombstone_in_the_same_group_keeps_the_upsert_and_its_usage(
        replica_path):
    """A server's cell feed upserts it and, in the same group, the API database's feed
    says it holds no such server (no build request): the cell's row and its usage stay,
    whichever comes first; the other feed's own row of a key still goes."""
    conn = open_writer(replica_path)
    writer = Writer(conn)
    a, b = E.server(1), E.server(2)
    writer.apply([_up("c1", 1, a), _up("api", 1, b)])
    writer.apply([_up("c1", 2, dict(a, display_name="grouped")), _gone("api", a["uuid"]),
                  _up("c1", 3, b), _gone("api", b["uuid"])])
    rows = conn.execute("SELECT uuid, cell, seq, display_name FROM servers "
                        "ORDER BY seq").fetchall()
    assert [(cell, seq, name) for _uuid, cell, seq, name in rows] == [
        ("c1", 2, "grouped"), ("c1", 3, b["display_name"])]
    assert _usage(conn) == [(E.PROJECT, 2, 2, 1024)] == _recount(conn)
    # the other order: the other feed's tombstone first, then the cell's upsert
    writer.apply([_gone("api", a["uuid"]), _up("c1", 4, dict(a, display_name="again"))])
    assert conn.execute("SELECT seq, display_name FROM servers WHERE uuid = ?",
                        (a["uuid"],)).fetchall() == [(4, "again")]
    # a feed's own tombstone after its upsert in one group still deletes
    writer.apply([_up("c1", 5, a), _gone("api", a["uuid"]), _gone("c1", a["uuid"])])
    assert conn.execute("SELECT count(*) FROM servers WHERE uuid = ?",
                        (a["uuid"],)).fetchall() == [(0,)]
    assert _usage(conn) == [(E.PROJECT, 1, 1, 512)] == _recount(conn)
