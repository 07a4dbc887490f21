"""Hostile feeds: a message no cell should send must cost one dead letter, never the
feed; an operator can resync a cell that went stale."""

from __future__ import annotations

from replica import feed
from replica.ingest import CellFeed

from tests.conftest import wait_for
from tests.replica.conftest import assert_converged, make_server, read_rows

MIB = 1024 * 1024


def _dead_reasons(replica_path):
    return [r for (r,) in read_rows(replica_path, "SELECT reason FROM dead_letters ORDER BY id")]


def test_a_message_over_the_transport_limit_is_dead_lettered_and_the_feed_goes_on(
        make_cell, make_ingest, relays, replica_path, tmp_path):
    c1 = make_cell("c1")
    c1.populate(30, seed=31)
    c1.start()
    relay = relays(c1.feed_url, f"ipc://{tmp_path}/relay.feed")
    ing = make_ingest([CellFeed("c1", relay.url, c1.control_url)])
    ing.start()
    ing.wait_caught_up([c1])
    relay.inject(b"\x92" + b"\x00" * (17 * MIB))
    wait_for(lambda: _dead_reasons(replica_path) == ["oversized"], 15,
             what="the oversized message dead-lettered")
    # The feed itself goes on: live changes arrive through the same subscription.
    c1.churn(200, seed=32, rate=1000)
    status = ing.wait_caught_up([c1], timeout=60)
    assert status["c1"]["state"] == "live" and status["c1"]["dead_letters"] == 1
    assert_converged(replica_path, c1)


def test_a_feed_that_goes_deaf_is_subscribed_again(make_cell, make_ingest, relays,
                                                   replica_path, tmp_path):
    """Past nanomsg's own receive limit a connection stops delivering anything, without
    an error: ingest subscribes again once its feed is silent."""
    c1 = make_cell("c1")
    c1.populate(30, seed=41)
    c1.start()
    relay = relays(c1.feed_url, f"ipc://{tmp_path}/relay.feed")
    ing = make_ingest([CellFeed("c1", relay.url, c1.control_url)], **{"stale-after": 4.0})
    ing.start()
    ing.wait_caught_up([c1])
    relay.inject(b"\x92" + b"\x00" * (80 * MIB))
    c1.churn(200, seed=42, rate=1000)
    ing.wait_caught_up([c1], timeout=60)
    before = ing.cell("c1")["seq"]
    c1.churn(100, seed=43, rate=1000)
    status = ing.wait_caught_up([c1], timeout=60)
    assert status["c1"]["seq"] > before
    assert "subscribing again" in ing.proc.output()
    assert_converged(replica_path, c1)


def test_a_stale_cell_can_be_resynced(make_cell, make_ingest, replica_path, tmp_path):
    """The feed is silent (here: nothing publishes at the configured address) while the
    cell's control socket answers: the cell is stale, and a resync is what the operator
    reaches for."""
    c1 = make_cell("c1")
    c1.populate(25, seed=51)
    c1.start()
    ing = make_ingest([CellFeed("c1", f"ipc://{tmp_path}/nobody.feed", c1.control_url)],
                      **{"stale-after": 1.0})
    ing.start()
    wait_for(lambda: ing.cell("c1")["state"] == "stale", 20, what="c1 stale")
    c1.churn(50, seed=52, rate=1000)
    job = ing.client.wait_job(ing.client.resync("c1"), timeout=60)
    assert job["state"] == "done", job
    assert ing.cell("c1")["seq"] == c1.head()
    assert ing.cell("c1")["resyncs"] >= 1
    assert_converged(replica_path, c1)


def _stray_setup(make_cell, make_ingest, relays, tmp_path, seed):
    c1 = make_cell("c1")
    c1.populate(30, seed=seed)
    c1.start()
    relay = relays(c1.feed_url, f"ipc://{tmp_path}/relay.feed")
    ing = make_ingest([CellFeed("c1", relay.url, c1.control_url)])
    ing.start()
    status = ing.wait_caught_up([c1])
    return c1, relay, ing, status["c1"]


def test_stray_heartbeats_with_a_foreign_epoch_do_not_resync(make_cell, make_ingest, relays,
                                                             replica_path, tmp_path):
    """The publisher's hello decides: a heartbeat of another epoch than the one the cell's
    control socket answers with is a stray, dead-lettered, and nothing is thrown away."""
    c1, relay, ing, before = _stray_setup(make_cell, make_ingest, relays, tmp_path, 61)
    for n in range(20):
        relay.inject(feed.encode_heartbeat("c1", f"foreign-{n}", before["seq"], 1, 0.0))
    wait_for(lambda: ing.cell("c1")["dead_letters"] >= 20, 60, what="strays dead-lettered")
    # (the dead letters' rows are committed with ingest's next write, not with the count)
    wait_for(lambda: len(_dead_reasons(replica_path)) >= 20, 30, what="their rows")
    assert set(_dead_reasons(replica_path)) == {"foreign_epoch"}
    c1.churn(100, seed=62, rate=1000)
    status = ing.wait_caught_up([c1], timeout=60)
    assert status["c1"]["resyncs"] == before["resyncs"]     # the first attach's only
    assert_converged(replica_path, c1)


def test_an_absurd_seq_does_not_resync(make_cell, make_ingest, relays, replica_path, tmp_path):
    c1, relay, ing, before = _stray_setup(make_cell, make_ingest, relays, tmp_path, 71)
    epoch, seq = before["epoch"], before["seq"]
    server = make_server()
    top = 2 ** 64 - 1
    relay.inject(feed.encode_batch("c1", epoch, [
        feed.Event(top, feed.KIND_SERVER, feed.OP_UPSERT, server["uuid"], server)]))
    relay.inject(feed.encode_heartbeat("c1", epoch, top, 1, 0.0))
    # Far ahead but storable: a gap, which a replay from the position answers.
    relay.inject(feed.encode_batch("c1", epoch, [
        feed.Event(seq + 10 ** 12, feed.KIND_SERVER, feed.OP_UPSERT, server["uuid"],
                   server)]))
    wait_for(lambda: ing.cell("c1")["dead_letters"] >= 2, 60, what="strays dead-lettered")
    # (the dead letters' rows are committed with ingest's next write, not with the count)
    wait_for(lambda: len(_dead_reasons(replica_path)) >= 2, 30, what="their rows")
    assert _dead_reasons(replica_path) == ["bad_event", "bad_event"]
    c1.churn(100, seed=72, rate=1000)
    status = ing.wait_caught_up([c1], timeout=60)
    assert status["c1"]["resyncs"] == before["resyncs"]     # the first attach's only
    assert status["c1"]["head"] == c1.head()
    assert_converged(replica_path, c1)


def test_resyncs_of_a_cell_are_rate_limited_with_the_reason_in_status(
        make_cell, make_ingest, replica_path):
    c1 = make_cell("c1")
    c1.populate(20, seed=81)
    c1.start()
    ing = make_ingest([c1.feed()])
    ing.start()
    ing.wait_caught_up([c1])
    jobs = [ing.client.resync("c1") for _ in range(2)]
    for job in jobs:
        ing.client.wait_job(job, timeout=60)
    status = ing.cell("c1")
    assert status["resync_reason"] == "requested"
    assert status["resyncs"] >= 1
