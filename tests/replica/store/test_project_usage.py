"""The per-project usage (schema step 7) follows the server rows in the writer's own
transactions, whatever writes them: event upserts, soft deletion and soft-delete, a
resize, a project change, tombstones, a resync's swap. It always equals a recount of
the rows as Nova counts them (live, not soft-deleted: count, vcpus, memory)."""

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
    """The usage triggers' writes count in SQLite's change count: a batch where one row's
    stable column changes (its upsert leaves it) while another changes usage must still
    write the first row."""
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
