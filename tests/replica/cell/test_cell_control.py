"""Control logic without sockets: the digest hash cache follows the outbox, and
requests are answered (or refused) by ControlServer.handle."""

from __future__ import annotations

import threading

from replica import feed
from replica.cell import connection, control, entity, outbox, simulator, sqlite_source


def recomputed(conn) -> dict:
    return {(kind, key): (feed.entity_hash(e), feed.bucket_of(key))
            for kind, key, e in entity.iter_entities(conn, ["server"])}


def refresh(cache, conn) -> int:
    source = sqlite_source.borrowed(conn)
    with source.entities.read_view():
        return cache.refresh(source, ["server"])


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
    server.open()
    hello = feed.decode_reply("hello", server.handle(feed.encode_request("hello")))
    nodes = conn.execute("SELECT count(*) FROM compute_nodes").fetchone()[0]
    services = conn.execute("SELECT count(*) FROM services").fetchone()[0]
    # its servers, its hypervisors, its services
    assert (hello["head"], hello["oldest"]) == (5 + nodes + services, 1)
    assert feed._unpack(server.handle(b"\x00\x01"), 1 << 20)["ok"] is False
    server.source.close()     # a database error becomes an "internal" error reply
    reply = feed._unpack(server.handle(feed.encode_request("hello")), 1 << 20)
    assert (reply["ok"], reply["error"]) == (False, "internal")
    assert server.stats.errors == 2 and server.stats.requests == 3
    conn.close()


def test_snapshots_are_bounded_evicted_when_idle_and_expire(cell_db):
    simulator.populate(cell_db, 3, 1, seed=1)
    conn = connection.open_cell(cell_db)
    server = control.ControlServer(cell_db, "c1", outbox.epoch_of(conn), ["server"], None,
                                   threading.Event())
    server.open()

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
    server.source.close()
    conn.close()


def test_replay_is_cut_by_size_and_its_successor_prefetched(cell_db, monkeypatch):
    simulator.populate(cell_db, 40, 2, seed=3)
    simulator.run_simulator(simulator.SimulatorConfig(cell_db, 0, 40, 2, ops=60, seed=3))
    conn = connection.open_cell(cell_db)
    epoch = outbox.epoch_of(conn)
    server = control.ControlServer(cell_db, "c1", epoch, ["server"], None, threading.Event())
    server.open()
    head = outbox.outbox_head(conn)

    def replay(start, limit=1000):
        return feed.decode_reply("replay", server.handle(feed.encode_request(
            "replay", epoch=epoch, **{"from": start}, limit=limit)))

    def plain(events):
        # A reply's rows go with the last upsert of a key per chunk it is built in:
        # replies cut at other places carry them on other events.
        return [{k: v for k, v in e.items() if k != "r"} for e in events]

    whole = replay(1)["events"]
    assert [e["s"] for e in whole] == list(range(1, head + 1))
    monkeypatch.setattr(control, "REPLY_MAX_BYTES", 20_000)
    monkeypatch.setattr(control, "REPLAY_CHUNK", 7)
    first = replay(1)["events"]
    assert 1 < len(first) < head and plain(first) == plain(whole[:len(first)])
    # the next reply was built after this one went out, and is the one served next
    assert server.pending_prefetch == ("replay", len(first) + 1, 1000)
    server.prefetch()
    assert server.prefetched_replay[:2] == (len(first) + 1, 1000)
    prefetched = server.prefetched_replay[3]
    second = replay(len(first) + 1)["events"]
    assert server.prefetched_replay is None
    assert plain(second) == plain(whole[len(first):len(first) + len(second)])
    assert feed.decode_reply("replay", prefetched)["events"] == second
    # a request that is not the predicted one is answered afresh
    server.prefetch()
    assert replay(3)["events"][0]["s"] == 3 and server.prefetched_replay is None
    server.source.close()
    conn.close()


def test_replay_events_carry_the_rows_the_appliance_would_render(cell_db):
    from replica import render
    from replica.kinds import renderers
    simulator.populate(cell_db, 20, 2, seed=5)
    simulator.run_simulator(simulator.SimulatorConfig(cell_db, 0, 20, 2, ops=30, seed=5))
    conn = connection.open_cell(cell_db)
    epoch = outbox.epoch_of(conn)
    server = control.ControlServer(cell_db, "c1", epoch, ["server"], None, threading.Event())
    server.open()
    reply = feed.decode_reply("replay", server.handle(feed.encode_request(
        "replay", epoch=epoch, **{"from": 1}, limit=1000)))
    assert reply["rv"] == render.RENDER_VERSION
    events = feed.decode_events(reply["events"], entities=False)
    last = {}
    for e in events:
        last[(e.kind, e.key)] = e
    rendered = [e for e in events if e.row is not None]
    assert rendered and {e.seq for e in rendered} == {
        e.seq for e in last.values() if e.op == feed.OP_UPSERT}
    for e in rendered:
        entity = feed.open_entity(e.kind, e.key, e.entity, "test")
        row_of = renderers(render)[e.kind][1]
        assert e.row == list(row_of("c1", e.seq, entity, e.entity_hash))
    server.source.close()
    conn.close()


def test_snapshot_pages_are_cut_by_size(cell_db, monkeypatch):
    simulator.populate(cell_db, 30, 2, seed=4)
    conn = connection.open_cell(cell_db)
    server = control.ControlServer(cell_db, "c1", outbox.epoch_of(conn), ["server"], None,
                                   threading.Event())
    server.open()
    expected = [key for _kind, key, _e in entity.iter_entities(conn, ["server"])]
    monkeypatch.setattr(control, "REPLY_MAX_BYTES", 12_000)
    snap = feed.decode_reply("snapshot_begin",
                             server.handle(feed.encode_request("snapshot_begin")))["snapshot"]
    seen, after, pages = [], None, 0
    while True:
        page = feed.decode_reply("snapshot_page", server.handle(feed.encode_request(
            "snapshot_page", snapshot=snap, after=after, limit=100)))
        assert len(page["items"]) < 30
        seen += [key for _kind, key, _e in page["items"]]
        pages += 1
        if page["done"]:
            break
        after = page["items"][-1][:2]
    assert seen == expected and pages > 2
    for s in list(server.snapshots.values()):
        s.close()
    server.source.close()
    conn.close()


def test_a_digest_sees_changes_that_bypassed_the_outbox(cell_db):
    simulator.populate(cell_db, 20, 2, seed=6)
    conn = connection.open_cell(cell_db)
    stop = threading.Event()
    server = control.ControlServer(cell_db, "c1", outbox.epoch_of(conn), ["server"], None, stop)
    server.open()
    before = feed.decode_reply("digest", server.handle(feed.encode_request("digest")))
    assert server.hashes.entries == recomputed(conn)
    with conn:
        with outbox.triggers_suspended(conn):
            conn.execute("UPDATE instances SET display_name = 'drifted' WHERE id = "
                         "(SELECT min(id) FROM instances)")
    after = feed.decode_reply("digest", server.handle(feed.encode_request("digest")))
    assert after["seq"] == before["seq"] == outbox.outbox_head(conn)
    assert server.hashes.entries == recomputed(conn)
    changed = [b for b in range(feed.DIGEST_BUCKETS) if before["buckets"][b] != after["buckets"][b]]
    assert len(changed) == 1
    server.source.close()
    conn.close()
