"""Ingest's accept / dead-letter / group-commit logic, driven message by message
(no sockets: the messages are the real encodings, the database a real file)."""

import msgpack
import pytest

from replica import feed
from replica.position import Position
from replica.states import CellState

from tests.replica.conftest import live_ingest, make_server


@pytest.fixture
def ingest(replica_path):
    ing = live_ingest(replica_path)
    yield ing
    ing.conn.close()


def events(first, n, kind=feed.KIND_SERVER):
    return [feed.Event(first + i, kind, feed.OP_UPSERT, s["uuid"], s)
            for i, s in enumerate(make_server() for _ in range(n))]


def rows(ing, sql="SELECT count(*) FROM servers"):
    return ing.conn.execute(sql).fetchall()


def test_next_events_are_group_committed_with_the_position(ingest):
    link = ingest.links["c1"]
    ingest.on_message(link, feed.encode_batch("c1", "E", events(1, 3)))
    ingest.on_message(link, feed.encode_batch("c1", "E", events(4, 2)))
    assert rows(ingest) == [(0,)]                 # queued, not yet committed
    ingest.commit()
    assert rows(ingest) == [(5,)]
    assert ingest.writer.load_positions()["c1"] == Position("c1", "E", 5)
    assert (ingest.events_applied, ingest.batches_committed) == (5, 1)


def test_another_feeds_tombstone_in_the_same_group_does_not_undo_a_cells_upsert(
        replica_path):
    """A server's cell publishes it, and within the same group commit the API database's
    feed publishes its tombstone (no build request of that server): the cell's change
    is what the replica holds."""
    ing = live_ingest(replica_path, cells=("c1", "api"))
    try:
        server = make_server()
        ing.on_message(ing.links["c1"], feed.encode_batch("c1", "E", [
            feed.Event(1, feed.KIND_SERVER, feed.OP_UPSERT, server["uuid"], server)]))
        ing.commit()
        renamed = dict(server, display_name="renamed")
        ing.on_message(ing.links["c1"], feed.encode_batch("c1", "E", [
            feed.Event(2, feed.KIND_SERVER, feed.OP_UPSERT, server["uuid"], renamed)]))
        ing.on_message(ing.links["api"], feed.encode_batch("api", "E", [
            feed.Event(1, feed.KIND_SERVER, feed.OP_DELETE, server["uuid"], None)]))
        ing.commit()
        assert rows(ing, "SELECT cell, seq, display_name FROM servers") == [
            ("c1", 2, "renamed")]
        assert ing.writer.load_positions()["api"] == Position("api", "E", 1)
    finally:
        ing.conn.close()


def test_an_entity_several_times_in_a_batch_is_rendered_once_at_its_last_seq(ingest):
    link = ingest.links["c1"]
    one, other = make_server(), make_server()
    batch = [feed.Event(seq, feed.KIND_SERVER, feed.OP_UPSERT, ent["uuid"], ent)
             for seq, ent in ((1, one), (2, other), (3, one), (4, one))]
    ingest.on_message(link, feed.encode_batch("c1", "E", batch))
    ingest.commit()
    assert sorted(ingest.render.rendered) == sorted([(one["uuid"], 4), (other["uuid"], 2)])
    assert rows(ingest, "SELECT uuid, seq FROM servers ORDER BY seq") == [
        (other["uuid"], 2), (one["uuid"], 4)]
    assert ingest.events_applied == 4
    assert ingest.writer.load_positions()["c1"] == Position("c1", "E", 4)


def test_a_malformed_event_is_refused_even_when_a_later_one_supersedes_it(ingest):
    link = ingest.links["c1"]
    server = make_server()
    good = feed.encode_events([feed.Event(2, feed.KIND_SERVER, feed.OP_UPSERT, server["uuid"],
                                          server)])[0]
    bad = {**good, "s": 1, "e": feed.entity_bytes({**server, "locked": "yes"})}
    payload = msgpack.packb({**_valid_batch_obj(), "events": [bad, good]})
    ingest.on_message(link, payload)
    ingest.commit()
    assert rows(ingest) == [(0,)] and link.position.seq == 0
    assert ingest.writer.dead_letters()[0]["reason"] == "bad_entity"
    assert "field 'locked' has type str" in ingest.writer.dead_letters()[0]["message"]


def test_duplicates_are_ignored_and_a_gap_raises_the_flag(ingest):
    link = ingest.links["c1"]
    batch = events(1, 3)
    ingest.on_message(link, feed.encode_batch("c1", "E", batch))
    ingest.on_message(link, feed.encode_batch("c1", "E", batch[1:]))   # duplicate
    assert not link.gap_flag
    ingest.on_message(link, feed.encode_batch("c1", "E", events(6, 1)))  # 4, 5 lost
    assert link.gap_flag and link.position.seq == 3
    ingest.commit()
    assert rows(ingest) == [(3,)]


def test_a_new_epoch_is_a_claim_for_hello_to_judge_and_applies_nothing(ingest):
    link = ingest.links["c1"]
    ingest.on_message(link, feed.encode_batch("c1", "OTHER", events(1, 2)))
    ingest.on_message(link, feed.encode_heartbeat("c1", "OTHER", 2, 1, 1.0))
    assert [epoch for epoch, _ in link.epoch_claims] == ["OTHER", "OTHER"]
    assert not link.new_epoch_flag       # nothing thrown away before the cell is asked
    ingest.commit()
    assert rows(ingest) == [(0,)]


def test_an_automatic_resync_waits_out_the_interval(ingest, monkeypatch):
    import time

    from replica import ingest as ingest_module
    link = ingest.links["c1"]
    monkeypatch.setattr(ingest_module, "RESYNC_WINDOW", 0.2)
    link.resync_ends.extend([time.monotonic()] * ingest_module.RESYNC_BURST)
    link.set_state(CellState.RESYNCING, "new epoch")
    began = time.monotonic()
    ingest._resync(link)               # no control request: it waits, then returns
    assert 0.1 < time.monotonic() - began < 2
    assert "held back" in link.error and "new epoch" in link.error
    assert link.status({})["resync_reason"] == "new epoch" and link.resyncs == 0


def _replay_reply(head: int, replayed: list) -> dict:
    return {"epoch": "E", "head": head, "events": feed.encode_events(replayed), "rv": None}


def test_live_batches_applied_while_a_replay_reply_travels_are_not_a_rewound_cell(
        ingest, monkeypatch):
    """A replay reply is the cell's state at its head, read a little earlier (the cell
    may even have built it ahead of the request): live batches the feed delivered
    meanwhile put the replica past that head, and the link goes live, no resync."""
    link = ingest.links["c1"]
    link.set_state(CellState.CATCHING_UP)
    replayed, live = events(1, 3), events(4, 2)

    def replay_while_the_feed_delivers(link_, op, timeout=None, **args):
        assert (op, args["from"]) == ("replay", 1)
        ingest.on_message(link, feed.encode_batch("c1", "E", replayed + live))
        return _replay_reply(3, replayed)

    monkeypatch.setattr(ingest, "request", replay_while_the_feed_delivers)
    ingest._catch_up_page(link)
    assert link.state is CellState.LIVE and link.position.seq == 5


def test_a_replica_past_the_head_when_it_asks_resyncs(ingest, monkeypatch):
    from replica.link_errors import Resync
    link = ingest.links["c1"]
    ingest.on_message(link, feed.encode_batch("c1", "E", events(1, 5)))
    link.set_state(CellState.CATCHING_UP)
    monkeypatch.setattr(ingest, "request",
                        lambda link_, op, timeout=None, **args: _replay_reply(3, []))
    with pytest.raises(Resync, match="replica at 5 ahead of the cell's head 3"):
        ingest._catch_up_page(link)


def test_a_seq_past_sqlites_integers_is_dead_lettered(ingest):
    link = ingest.links["c1"]
    ingest.on_message(link, feed.encode_batch("c1", "E", events(2 ** 64 - 1, 1)))
    ingest.on_message(link, feed.encode_heartbeat("c1", "E", 2 ** 64 - 1, 1, 1.0))
    ingest.commit()
    assert [d["reason"] for d in ingest.writer.dead_letters()] == ["bad_event", "bad_event"]
    assert link.head == 0 and not link.gap_flag


def test_heartbeat_ahead_with_no_batch_is_a_tail_gap(ingest):
    link = ingest.links["c1"]
    ingest.on_message(link, feed.encode_heartbeat("c1", "E", 0, 1, 1.0))
    assert not link.gap_flag
    ingest.on_message(link, feed.encode_heartbeat("c1", "E", 7, 1, 2.0))
    assert link.gap_flag and link.head == 7


def _valid_batch_obj():
    return {"v": feed.FEED_VERSION, "t": "batch", "cell": "c1", "epoch": "E",
            "events": feed.encode_events(events(1, 1))}


@pytest.mark.parametrize("payload,reason", [
    (b"\xc1garbage", "malformed"),
    (feed.encode_batch("c1", "E", events(1, 2))[:-7], "malformed"),      # truncated
    (b"\x00" * (feed.MAX_MESSAGE_BYTES + 1), "oversized"),
    (msgpack.packb([1, 2, 3]), "malformed"),
    (msgpack.packb({**_valid_batch_obj(), "v": 99}), "unknown_version"),
    (msgpack.packb({**_valid_batch_obj(), "epoch": 5}), "malformed"),    # wrong type
    (msgpack.packb({**_valid_batch_obj(), "cell": "nope"}), "unknown_cell"),
    (msgpack.packb({**_valid_batch_obj(), "events": [
        {"s": 1, "k": "server", "o": "u", "id": "not-a-uuid", "e": {}}]}), "bad_event"),
    (msgpack.packb({**_valid_batch_obj(), "events": [
        {**feed.encode_events(events(1, 1))[0], "e": {"uuid": "x"}}]}), "bad_entity"),
])
def test_bad_messages_are_dead_lettered_with_their_reason(ingest, payload, reason):
    link = ingest.links["c1"]
    ingest.on_message(link, payload)
    ingest.commit()
    assert rows(ingest) == [(0,)]
    assert link.position.seq == 0
    assert link.dead_letters == 1 and ingest.dead_total == 1
    assert ingest.writer.dead_letter_counts() == {("nope" if reason == "unknown_cell"
                                                   else "c1"): 1}
    assert ingest.writer.dead_letters()[0]["reason"] == reason


def test_a_batch_the_render_refuses_is_dead_lettered_whole(ingest):
    link = ingest.links["c1"]
    batch = events(1, 3)
    ingest.render.refuse.add(batch[1].key)
    ingest.on_message(link, feed.encode_batch("c1", "E", batch))
    ingest.commit()
    assert rows(ingest) == [(0,)] and link.position.seq == 0
    assert ingest.writer.dead_letters()[0]["reason"] == "bad_entity"
    ingest.render.refuse.clear()
    ingest.on_message(link, feed.encode_batch("c1", "E", batch))
    ingest.commit()
    assert rows(ingest) == [(3,)]


def test_group_commit_max_commits_inline(ingest):
    ingest.config.group_commit_max = 4
    link = ingest.links["c1"]
    ingest.on_message(link, feed.encode_batch("c1", "E", events(1, 5)))
    assert rows(ingest) == [(5,)] and ingest.pending == []


def test_status_has_every_documented_field(ingest):
    status = ingest.status()
    assert set(status) == {"cells", "dead_letters", "events_applied", "batches_committed", "pid",
                           "wal_bytes", "wal_backlog_bytes", "store_failing_since",
                           "store_error", "disk_full"}
    assert set(status["cells"][0]) == {
        "cell", "state", "state_since", "epoch", "seq", "head", "oldest", "lag_events",
        "lag_ms", "servers", "flavors", "instance_actions", "keypairs", "quotas", "hypervisors",
        "services", "aggregates", "server_groups",
        "last_event_at", "live_once", "gaps", "replays", "resyncs", "resync_failures",
        "dead_letters", "error", "resync_reason", "auth", "auth_keys"}
    assert status["cells"][0]["state"] == "live"
