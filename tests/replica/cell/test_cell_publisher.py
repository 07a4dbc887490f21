"""The publisher as a real process over ipc sockets: feed batches and heartbeats,
and every control op (hello, replay, snapshot, digest, bucket, fetch, errors)."""

from __future__ import annotations

import random
import threading

import pytest

from replica import feed
from replica.cell import connection, entity, outbox, publisher, simulator

from tests.conftest import wait_for
from tests.replica.cell.conftest import Control, Subscriber, epoch_of, head_of


def fresh(db: str, kinds=None) -> tuple[int, dict]:
    """(seq, {key: entity}) of the cell right now, in one read transaction (``kinds``:
    None, every kind the cell publishes: its servers, their instance actions and its
    hypervisors)."""
    conn = connection.open_cell_reader(db)
    try:
        conn.execute("BEGIN")
        seq = outbox.outbox_head(conn)
        if kinds is None:
            kinds = entity.kinds_in(outbox.table_columns(conn))
        ents = {key: e for _k, key, e in entity.iter_entities(conn, list(kinds))}
        conn.execute("ROLLBACK")
        return seq, ents
    finally:
        conn.close()


def fresh_by_kind(db: str) -> tuple[int, dict]:
    """(seq, {(kind, key): entity}) of every kind the cell publishes right now, in one
    read transaction (two kinds may share keys: a service's uuid is both a service's and
    an availability zone service's)."""
    conn = connection.open_cell_reader(db)
    try:
        conn.execute("BEGIN")
        seq = outbox.outbox_head(conn)
        kinds = entity.kinds_in(outbox.table_columns(conn))
        ents = {(kind, key): e for kind, key, e in entity.iter_entities(conn, list(kinds))}
        conn.execute("ROLLBACK")
        return seq, ents
    finally:
        conn.close()


def churn(db: str, ops: int, seed: int = 1, rate: float = 0, servers: int = 40) -> dict:
    return simulator.run_simulator(simulator.SimulatorConfig(db, rate, servers, 3, ops=ops,
                                                             seed=seed))


def collect(sub: Subscriber, until_seq: int) -> tuple[list[feed.Batch], list[feed.Heartbeat]]:
    batches, beats = [], []
    while not batches or batches[-1].last_seq < until_seq:
        message = sub.next()
        (batches if isinstance(message, feed.Batch) else beats).append(message)
    return batches, beats


@pytest.fixture
def populated(cell_db):
    simulator.populate(cell_db, 60, 3, seed=2)
    return cell_db


def test_hello(populated, publishers, clients):
    pub = publishers(populated)
    reply = clients(Control, pub.control_url).call("hello")
    conn = connection.open_cell_reader(populated)
    assert reply == {"ok": True, "cell": "c1", "epoch": outbox.epoch_of(conn),
                     "head": outbox.outbox_head(conn), "oldest": 1,
                     "versions": list(feed.FEED_VERSIONS),
                     "kinds": ["hypervisor", "instance_action", "server", "service"]}
    conn.close()


def test_batches_arrive_in_order_with_consecutive_seqs_and_current_entities(
        populated, publishers, clients):
    pub = publishers(populated)
    sub = clients(Subscriber, pub.feed_url)
    start = sub.heartbeat().head                      # subscribed, and the head we start at
    churn(populated, 150, rate=500)
    head = head_of(populated)
    batches, _beats = collect(sub, head)
    seqs = [e.seq for b in batches for e in b.events]
    assert seqs == list(range(start + 1, head + 1))
    assert {(b.cell, b.epoch) for b in batches} == {("c1", epoch_of(populated))}
    # after the writes stop, the last event of every key carries its current entity
    _seq, current = fresh(populated)
    last = {}
    for b in batches:
        for e in b.events:
            last[e.key] = e
    for key, event in last.items():
        if key in current:
            assert (event.op, event.entity) == ("u", current[key])
        else:
            assert (event.op, event.entity) == ("d", None)     # archived


def test_soft_delete_is_an_upsert_and_archive_a_tombstone(populated, publishers, clients):
    pub = publishers(populated)
    sub = clients(Subscriber, pub.feed_url)
    sub.heartbeat()
    conn = connection.open_cell(populated)
    (uuid,) = conn.execute("SELECT uuid FROM instances LIMIT 1").fetchone()
    conn.execute("UPDATE instances SET deleted = id, vm_state = 'deleted' WHERE uuid = ?", (uuid,))
    (batch,), _ = collect(sub, head_of(populated))
    assert [(e.op, e.key, e.entity["deleted"]) for e in batch.events] == [("u", uuid, True)]
    with conn:
        for table, column in simulator.INSTANCE_TABLES:
            conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (uuid,))
    batches, _ = collect(sub, head_of(populated))
    events = [e for b in batches for e in b.events]
    assert {(e.op, e.key, e.entity) for e in events} == {("d", uuid, None)}
    conn.close()


def test_heartbeat_carries_head_and_oldest(populated, publishers, clients):
    pub = publishers(populated, retention_events=20)
    sub = clients(Subscriber, pub.feed_url)
    head = head_of(populated)
    beat = wait_for(lambda: (lambda b: b if b.oldest == head - 19 else None)(sub.heartbeat()),
                    15, what="heartbeat after the first prune")
    assert (beat.cell, beat.head, beat.oldest) == ("c1", head, head - 19)


def test_replay_from_a_seq_and_the_retention_error(populated, publishers, clients):
    pub = publishers(populated, retention_events=30)
    ctl = clients(Control, pub.control_url)
    epoch = epoch_of(populated)
    head = head_of(populated)
    wait_for(lambda: ctl.call("hello")["oldest"] == head - 29, 15, what="first prune")
    reply = ctl.call("replay", epoch=epoch, limit=10, **{"from": head - 20})
    events = feed.decode_events(reply["events"])
    assert [e.seq for e in events] == list(range(head - 20, head - 10))
    assert reply["head"] == head and reply["epoch"] == epoch
    tail = ctl.call("replay", epoch=epoch, limit=1000, **{"from": head - 5})["events"]
    assert [e["s"] for e in tail] == list(range(head - 5, head + 1))
    assert ctl.call("replay", epoch=epoch, limit=10, **{"from": head + 1})["events"] == []
    with pytest.raises(feed.ControlError) as err:
        ctl.call("replay", epoch=epoch, limit=10, **{"from": 1})
    assert err.value.error == "retention" and err.value.reply["oldest"] == head - 29
    with pytest.raises(feed.ControlError) as err:
        ctl.call("replay", epoch="another", limit=10, **{"from": head})
    assert err.value.error == "epoch" and err.value.reply["epoch"] == epoch


def test_restart_resumes_and_the_gap_is_replayable(populated, publishers, clients, tmp_path):
    pub = publishers(populated)
    assert pub.stop() == 0                            # SIGTERM: a clean exit
    before = head_of(populated)
    churn(populated, 30)
    pub.start()
    ctl = clients(Control, pub.control_url)
    sub = clients(Subscriber, pub.feed_url)
    head = head_of(populated)
    assert ctl.call("hello")["head"] == head > before
    assert sub.heartbeat().head == head
    reply = ctl.call("replay", epoch=epoch_of(populated), limit=10_000, **{"from": before + 1})
    assert [e.seq for e in feed.decode_events(reply["events"])] == list(range(before + 1, head + 1))


class Writer:
    """Background churn that the test can pause (to take a reference view)."""

    def __init__(self, db: str):
        self.db = db
        self.gate = threading.Lock()
        self.stop = threading.Event()
        self.ops = 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        conn = connection.open_cell(self.db)
        try:
            sim = simulator.Churn(conn, random.Random(9), 60, 3, 0)
            while not self.stop.is_set():
                with self.gate:
                    sim.operations[sim.choose()]()
                    self.ops += 1
        finally:
            conn.close()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(30)


def test_snapshot_is_consistent_while_writes_continue(populated, publishers, clients):
    pub = publishers(populated)
    ctl = clients(Control, pub.control_url)
    with Writer(populated) as writer:
        wait_for(lambda: writer.ops > 20, what="writes under way")
        with writer.gate:                             # nothing commits between these two
            snap = ctl.call("snapshot_begin")
            seq, reference = fresh_by_kind(populated)
        assert (snap["seq"], snap["total"], snap["epoch"]) == (seq, len(reference),
                                                               epoch_of(populated))
        ops_at_begin = writer.ops
        items, after = [], None
        while True:
            page = ctl.call("snapshot_page", snapshot=snap["snapshot"], after=after, limit=7)
            items += page["items"]
            if page["done"]:
                break
            after = page["items"][-1][:2]
            wait_for(lambda: writer.ops > ops_at_begin, what="writes during the snapshot")
        assert writer.ops > ops_at_begin
    # in (kind, key) order
    assert [(kind, key) for kind, key, _e in items] == sorted(reference)
    assert {(kind, key): e for kind, key, e in items} == {
        kind_key: feed.entity_bytes(e) for kind_key, e in reference.items()}
    assert ctl.call("snapshot_end", snapshot=snap["snapshot"]) == {"ok": True}
    with pytest.raises(feed.ControlError) as err:
        ctl.call("snapshot_page", snapshot=snap["snapshot"], after=None, limit=5)
    assert err.value.error == "snapshot"


def expected_digest(current: dict) -> list[list[int]]:
    expected = [[0, 0] for _ in range(feed.DIGEST_BUCKETS)]
    for key, e in current.items():
        expected[feed.bucket_of(key)][0] += 1
        expected[feed.bucket_of(key)][1] += feed.entity_hash(e)
    return expected


def test_digest_and_buckets_equal_a_recomputation(populated, publishers, clients):
    pub = publishers(populated)
    ctl = clients(Control, pub.control_url)
    for round_ in range(3):                 # the first digest builds all, later ones catch up
        counts = churn(populated, 150, seed=round_)
        digest = ctl.call("digest")
        seq, current = fresh(populated)
        expected = expected_digest(current)
        assert (digest["seq"], digest["buckets"]) == (seq, expected)
        assert any(e.get("deleted") for e in current.values())  # soft-deleted servers count
    assert counts.get("archive") or counts.get("build")
    busiest = max(range(feed.DIGEST_BUCKETS), key=lambda b: expected[b][0])
    bucket = ctl.call("bucket", bucket=busiest)
    assert bucket["seq"] == seq
    assert {k: v[0] for k, v in bucket["entities"].items()} == {
        k: feed.entity_hash(e) for k, e in current.items() if feed.bucket_of(k) == busiest}
    assert all(0 < v[1] <= seq for v in bucket["entities"].values())


def test_fetch(populated, publishers, clients):
    pub = publishers(populated)
    ctl = clients(Control, pub.control_url)
    _seq, current = fresh(populated, ["server"])      # the servers only: a fetch is per kind
    some = sorted(current)[:3]
    reply = ctl.call("fetch", kind="server", keys=some + ["00000000-0000-4000-8000-000000000000"])
    assert reply["entities"] == {**{k: feed.entity_bytes(current[k]) for k in some},
                                 "00000000-0000-4000-8000-000000000000": None}


V = feed.FEED_VERSION

BAD_REQUESTS = [
    (b"\xc1 not msgpack", "malformed"),
    (feed._pack({"v": 99, "op": "hello"}), "unknown_version"),
    (feed._pack({"v": V, "op": "drop_tables"}), "malformed"),
    (feed._pack({"v": V, "op": "replay", "epoch": "x"}), "malformed"),
    (feed._pack({"v": V, "op": "snapshot_page", "snapshot": "nope", "after": None, "limit": 1}),
     "snapshot"),
    (feed._pack({"v": V, "op": "bucket", "bucket": 999}), "bad_request"),
    (feed._pack({"v": V, "op": "bucket", "bucket": "7"}), "bad_request"),
    (feed._pack({"v": V, "op": "fetch", "kind": "volume", "keys": []}), "bad_request"),
    (feed._pack({"v": V, "op": "fetch", "kind": "server", "keys": "abc"}), "bad_request"),
    (feed._pack({"v": V, "op": "fetch", "kind": "server", "keys": ["k"] * 5000}), "bad_request"),
]


def test_bad_control_requests_get_error_replies_and_the_publisher_keeps_serving(
        populated, publishers, clients):
    pub = publishers(populated)
    ctl = clients(Control, pub.control_url)
    epoch = epoch_of(populated)
    snap = ctl.call("snapshot_begin")["snapshot"]
    requests = BAD_REQUESTS + [
        (feed._pack({"v": V, "op": "replay", "epoch": epoch, "from": "1", "limit": 5}),
         "bad_request"),
        (feed._pack({"v": V, "op": "replay", "epoch": epoch, "from": 1, "limit": 0}),
         "bad_request"),
        (feed._pack({"v": V, "op": "snapshot_page", "snapshot": snap, "after": "x", "limit": 1}),
         "bad_request"),
    ]
    for data, error in requests:
        reply = ctl.raw(data)
        assert (reply["ok"], reply["error"]) == (False, error), data[:40]
        assert reply["message"]
    assert pub.alive()
    assert ctl.call("hello")["cell"] == "c1"
    assert ctl.call("snapshot_page", snapshot=snap, after=None, limit=5)["items"]


def test_a_flavor_source_publishes_flavors(tmp_path, publishers, clients):
    db = str(tmp_path / "flavors.db")
    outbox.init_cell_db(db, "flavors", flavors=True)
    simulator.seed_flavors(db)
    pub = publishers(db, "flavors")
    ctl = clients(Control, pub.control_url)
    sub = clients(Subscriber, pub.feed_url)
    # Nova's API database
    assert ctl.call("hello")["kinds"] == ["aggregate", "flavor", "keypair", "quota",
                                          "server_group"]
    snap = ctl.call("snapshot_begin")
    page = ctl.call("snapshot_page", snapshot=snap["snapshot"], after=None, limit=100)
    assert page["done"] and [i[1] for i in page["items"] if i[0] == "flavor"] == sorted(
        str(i) for i in range(1, 9))
    assert [i[1] for i in page["items"] if i[0] == "keypair"] == sorted(
        feed.keypair_key(user, name) for user, name in simulator.DEMO_KEYPAIRS)
    assert [i[1] for i in page["items"] if i[0] == "quota"] == [
        "class/default", "project/demo"]                                  # quota limits
    assert [i[1] for i in page["items"] if i[0] == "aggregate"] == ["1", "2"]   # aggregates
    sub.heartbeat()
    conn = connection.open_cell(db)
    conn.execute("INSERT INTO flavor_extra_specs (key, value, flavor_id) VALUES ('k', 'v', 1)")
    conn.close()
    batches, _ = collect(sub, head_of(db))
    (event,) = [e for b in batches for e in b.events]
    assert (event.kind, event.key, event.entity["extra_specs"]) == ("flavor", "1", {"k": "v"})
    conn = connection.open_cell(db)
    conn.execute("INSERT INTO quotas (project_id, resource, hard_limit) "
                 "VALUES ('other', 'instances', 3)")
    conn.close()
    batches, _ = collect(sub, head_of(db))
    (event,) = [e for b in batches for e in b.events]
    assert (event.kind, event.key, event.entity["limits"]["instances"]) == (
        "quota", "project/other", 3)
    conn = connection.open_cell(db)                      # a host joins an aggregate
    conn.execute("INSERT INTO aggregate_hosts (host, aggregate_id) VALUES ('compute-x', 2)")
    hosts = [h for (h,) in conn.execute("SELECT host FROM aggregate_hosts "
                                        "WHERE aggregate_id = 2 ORDER BY id")]
    conn.close()
    batches, _ = collect(sub, head_of(db))
    (event,) = [e for b in batches for e in b.events]
    assert (event.kind, event.key, event.entity["hosts"]) == ("aggregate", "2", hosts)
    assert hosts[-1] == "compute-x"


def test_run_publisher_in_a_thread_stops_when_told(populated, tmp_path, clients):
    config = publisher.PublisherConfig(populated, "c1", f"ipc://{tmp_path}/t.feed",
                                       f"ipc://{tmp_path}/t.ctl", heartbeat_interval=0.05)
    stop = threading.Event()
    thread = threading.Thread(target=publisher.run_publisher, args=(config, stop))
    thread.start()
    try:
        sub = clients(Subscriber, config.feed_url)
        assert sub.heartbeat().head == head_of(populated)
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
