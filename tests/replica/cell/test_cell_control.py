"""Control logic without sockets: the digest hash cache follows the outbox, and
requests are answered (or refused) by ControlServer.handle."""

from __future__ import annotations

import threading

from replica import feed
from replica.cell import connection, control, entity, outbox, simulator


def recomputed(conn) -> dict:
    return {(kind, key): (feed.entity_hash(e), feed.bucket_of(key))
            for kind, key, e in entity.iter_entities(conn, ["server"])}


def refresh(cache, conn) -> int:
    conn.execute("BEGIN")
    try:
        return cache.refresh(conn, ["server"])
    finally:
        conn.execute("ROLLBACK")


def test_hash_cache_follows_changes_and_survives_pruning(cell_db):
    simulator.populate(cell_db, 30, 2, seed=1)
    conn = connection.open_cell(cell_db)
    cache = control.HashCache()
    assert refresh(cache, conn) == outbox.outbox_head(conn)
    assert cache.entries == recomputed(conn)
    simulator.run_simulator(simulator.SimulatorConfig(cell_db, 0, 30, 2, ops=300, seed=2))
    refresh(cache, conn)
    assert cache.entries == recomputed(conn)
    # the outbox pruned past the cached seq: the cache rebuilds from scratch
    outbox.prune(conn, 0, 0)
    conn.execute("DELETE FROM instances WHERE id = (SELECT min(id) FROM instances)")
    outbox.prune(conn, 0, 0)
    conn.execute("UPDATE instances SET display_name = 'x' WHERE id = (SELECT max(id) FROM instances)")
    assert refresh(cache, conn) == outbox.outbox_head(conn)
    assert cache.entries == recomputed(conn)
    conn.close()


def test_handle_answers_and_refuses_without_raising(cell_db):
    simulator.populate(cell_db, 5, 1, seed=1)
    conn = connection.open_cell(cell_db)
    server = control.ControlServer(cell_db, "c1", outbox.epoch_of(conn), ["server"], None,
                                   threading.Event())
    server.conn = connection.open_cell_reader(cell_db)
    hello = feed.decode_reply("hello", server.handle(feed.encode_request("hello")))
    assert (hello["head"], hello["oldest"]) == (5, 1)
    assert feed._unpack(server.handle(b"\x00\x01"), 1 << 20)["ok"] is False
    server.conn.close()     # a database error becomes an "internal" error reply
    reply = feed._unpack(server.handle(feed.encode_request("hello")), 1 << 20)
    assert (reply["ok"], reply["error"]) == (False, "internal")
    assert server.stats.errors == 2 and server.stats.requests == 3
    conn.close()


def test_snapshots_are_bounded_evicted_when_idle_and_expire(cell_db):
    simulator.populate(cell_db, 3, 1, seed=1)
    conn = connection.open_cell(cell_db)
    server = control.ControlServer(cell_db, "c1", outbox.epoch_of(conn), ["server"], None,
                                   threading.Event())
    server.conn = connection.open_cell_reader(cell_db)

    def call(op, **args):
        return feed._unpack(server.handle(feed.encode_request(op, **args)), 1 << 20)

    ids = [call("snapshot_begin")["snapshot"] for _ in range(control.MAX_SNAPSHOTS)]
    assert call("snapshot_begin")["error"] == "busy"
    server.snapshots[ids[1]].last_used -= control.SNAPSHOT_EVICT_IDLE_SECONDS + 1
    fifth = call("snapshot_begin")
    assert fifth["ok"] and ids[1] not in server.snapshots
    assert call("snapshot_page", snapshot=ids[1], after=None, limit=5)["error"] == "snapshot"
    server.snapshots[ids[0]].last_used -= control.SNAPSHOT_IDLE_SECONDS + 1
    server.expire_idle()
    assert set(server.snapshots) == {ids[2], ids[3], fifth["snapshot"]}
    page = call("snapshot_page", snapshot=ids[2], after=None, limit=5)
    assert page["done"] and len(page["items"]) == 3
    # a page that is not the last one has its successor built after the reply
    first = call("snapshot_page", snapshot=ids[3], after=None, limit=2)
    server.prefetch()
    assert server.snapshots[ids[3]].prefetched[:2] == (tuple(first["items"][-1][:2]), 2)
    second = call("snapshot_page", snapshot=ids[3], after=first["items"][-1][:2], limit=2)
    assert second["done"] and server.snapshots[ids[3]].prefetched is None
    assert [i[1] for i in first["items"] + second["items"]] == [i[1] for i in page["items"]]
    for snap in list(server.snapshots.values()):
        snap.close()
    server.conn.close()
    conn.close()
