"""Authenticated feeds and control, with real publishers, ingest and nanomsg sockets:
a sealed feed applies; a message that does not authenticate is dead-lettered
``bad_signature`` and never applied, and the feed goes on; keys rotate with no
restart; a control request under the wrong key gets a refusal and nothing else while
the right one is served; a cell and an appliance that disagree apply nothing."""

from __future__ import annotations

import shutil

import msgpack
import nanomsg
import pytest

from replica import feed, sealing
from replica.ingest import CellFeed
from replica.ingest_control import Requester
from replica.key_file import (add_key, promote_key, read_key_file, remove_key, sealer_for,
                              write_new_key_file)

from tests.conftest import wait_for
from tests.replica.conftest import assert_converged, make_server, read_rows


def _dead(replica_path):
    return read_rows(replica_path, "SELECT reason, message FROM dead_letters ORDER BY id")


def _servers(replica_path, cell="c1"):
    return {k for (k,) in read_rows(replica_path, "SELECT uuid FROM servers WHERE cell = ?",
                                    (cell,))}


def _forged_batch(cell, epoch, seq):
    """A well-formed batch that follows the replica's position: only its seal is wrong."""
    server = make_server()
    return server["uuid"], feed.encode_batch(cell, epoch, [
        feed.Event(seq, "server", "u", server["uuid"], server)])


@pytest.fixture
def keys(tmp_path):
    """``keys(name)``: a new key file in tmp_path."""
    def make(name="c1.key"):
        path = str(tmp_path / name)
        write_new_key_file(path)
        return path
    return make


def test_a_sealed_feed_applies_and_a_forged_message_never_does(make_cell, make_ingest,
                                                                relays, replica_path,
                                                                tmp_path, keys):
    key = keys()
    wrong = keys("wrong.key")
    c1 = make_cell("c1", key_file=key)
    c1.populate(30, seed=61)
    c1.start()
    relay = relays(c1.feed_url, f"ipc://{tmp_path}/relay.feed")
    ing = make_ingest([CellFeed("c1", relay.url, c1.control_url, key)])
    ing.start()
    status = ing.wait_caught_up([c1])
    assert status["c1"]["auth"] == sealing.ALGORITHM
    pos = ing.cell("c1")
    # Well-formed batches that follow the position: under another key, unsealed, and
    # sealed with the right key for another cell.
    forged = []
    for sealer in (sealer_for("c1", wrong), None, sealer_for("c2", key)):
        uuid, data = _forged_batch("c1", pos["epoch"], pos["seq"] + 1)
        forged.append(uuid)
        relay.inject(data if sealer is None else sealer.seal_feed(data))
    wait_for(lambda: len(_dead(replica_path)) == 3, 15, what="three dead letters")
    assert [reason for reason, _m in _dead(replica_path)] == ["bad_signature"] * 3
    messages = [m for _r, m in _dead(replica_path)]
    assert "not in this key file" in messages[0] and "not sealed" in messages[1]
    assert "does not authenticate" in messages[2]
    # The feed goes on: later good messages apply; nothing forged ever did.
    c1.churn(200, seed=62, rate=1000)
    status = ing.wait_caught_up([c1], timeout=60)
    assert status["c1"]["state"] == "live" and status["c1"]["dead_letters"] == 3
    assert not _servers(replica_path) & set(forged)
    assert_converged(replica_path, c1)


def test_an_authenticated_only_feed_is_readable_and_still_checked(make_cell, make_ingest,
                                                                  relays, replica_path,
                                                                  tmp_path, keys):
    key = keys()
    c1 = make_cell("c1", key_file=key, publisher_args=["--authenticate-only"])
    c1.populate(10, seed=121)
    c1.start()
    relay = relays(c1.feed_url, f"ipc://{tmp_path}/relay.feed")
    frame = None
    tap = nanomsg.Socket(nanomsg.SUB)
    try:
        tap.set_string_option(nanomsg.SUB, nanomsg.SUB_SUBSCRIBE, b"")
        tap.set_int_option(nanomsg.SOL_SOCKET, nanomsg.RCVTIMEO, 5000)
        tap.connect(c1.feed_url)
        frame = tap.recv()
    finally:
        tap.close()
    assert sealing.is_sealed(frame) and not frame[2] & sealing.FLAG_ENCRYPTED
    assert b"epoch" in frame                     # readable on the wire
    ing = make_ingest([CellFeed("c1", relay.url, c1.control_url, key)])
    ing.start()
    ing.wait_caught_up([c1])
    altered = bytearray(frame)
    altered[altered.index(b"epoch") + 8] ^= 0x01    # one byte of the epoch's value
    relay.inject(bytes(altered))
    wait_for(lambda: [r for r, _m in _dead(replica_path)] == ["bad_signature"], 15,
             what="the altered message dead-lettered")
    c1.churn(50, seed=122, rate=1000)
    ing.wait_caught_up([c1], timeout=60)
    assert_converged(replica_path, c1)


def test_a_replayed_sealed_message_does_not_roll_the_replica_back(make_cell, make_ingest,
                                                                  relays, replica_path,
                                                                  tmp_path, keys):
    key = keys()
    c1 = make_cell("c1", key_file=key)
    c1.populate(20, seed=71)
    c1.start()
    relay = relays(c1.feed_url, f"ipc://{tmp_path}/relay.feed")
    tap = nanomsg.Socket(nanomsg.SUB)       # records what went by, as an attacker would
    try:
        tap.set_string_option(nanomsg.SUB, nanomsg.SUB_SUBSCRIBE, b"")
        tap.set_int_option(nanomsg.SOL_SOCKET, nanomsg.RCVTIMEO, 200)
        tap.connect(relay.url)
        ing = make_ingest([CellFeed("c1", relay.url, c1.control_url, key)])
        ing.start()
        ing.wait_caught_up([c1])
        c1.churn(100, seed=72, rate=1000)
        ing.wait_caught_up([c1], timeout=60)
        recorded = []
        sealer = sealer_for("c1", key)
        while True:
            try:
                frame = tap.recv()
            except nanomsg.NanoMsgAPIError:
                break
            if isinstance(feed.decode_message(sealer.open_feed(frame)), feed.Batch):
                recorded.append(frame)
    finally:
        tap.close()
    assert recorded, "no batch seen on the feed"
    c1.churn(100, seed=73, rate=1000)
    before = ing.wait_caught_up([c1], timeout=60)["c1"]
    for frame in recorded:
        relay.inject(frame)
    c1.churn(20, seed=74, rate=1000)
    status = ing.wait_caught_up([c1], timeout=60)
    assert status["c1"]["seq"] > before["seq"]
    assert status["c1"]["resyncs"] == before["resyncs"] and _dead(replica_path) == []
    assert_converged(replica_path, c1)


def _feed_key_id(url):
    """The id of the key that sealed the next message on a feed."""
    tap = nanomsg.Socket(nanomsg.SUB)
    try:
        tap.set_string_option(nanomsg.SUB, nanomsg.SUB_SUBSCRIBE, b"")
        tap.set_int_option(nanomsg.SOL_SOCKET, nanomsg.RCVTIMEO, 2000)
        tap.connect(url)
        frame = tap.recv()
        return frame[4:4 + frame[3]].decode()
    finally:
        tap.close()


def test_keys_rotate_without_a_restart(make_cell, make_ingest, replica_path, tmp_path, keys):
    """Add the new key to both sides (it opens), then put it first (it seals), then drop
    the old one: the feed and control go on throughout."""
    cell_key = keys("cell.key")
    app_key = str(tmp_path / "app.key")
    shutil.copy(cell_key, app_key)
    c1 = make_cell("c1", key_file=cell_key)
    c1.populate(20, seed=81)
    c1.start()
    ing = make_ingest([c1.feed(app_key)])
    ing.start()
    ing.wait_caught_up([c1])
    old_id = read_key_file(cell_key).sealing_id

    def copy(src, dst):
        shutil.copy(src, dst + ".tmp")
        shutil.move(dst + ".tmp", dst)

    new_id = add_key(app_key)                   # 1. both sides hold both; old seals
    copy(app_key, cell_key)
    wait_for(lambda: ing.cell("c1")["auth_keys"] == [old_id, new_id], 15,
             what="ingest holds both keys")
    c1.churn(50, seed=82, rate=1000)
    ing.wait_caught_up([c1], timeout=60)
    promote_key(app_key, new_id)                # 2. the new key seals, on both sides
    copy(app_key, cell_key)
    wait_for(lambda: ing.cell("c1")["auth_keys"] == [new_id, old_id], 15,
             what="ingest seals with it")
    wait_for(lambda: _feed_key_id(c1.feed_url) == new_id, 15, what="the cell seals with it")
    c1.churn(50, seed=83, rate=1000)
    ing.wait_caught_up([c1], timeout=60)
    for path in (cell_key, app_key):            # 3. the old key goes
        remove_key(path, old_id)
    assert read_key_file(cell_key).ids == (new_id,)
    c1.churn(50, seed=84, rate=1000)
    ing.wait_caught_up([c1], timeout=60)
    job = ing.client.wait_job(ing.client.verify("c1"), timeout=60)   # control too
    assert job["state"] == "done", job
    assert _dead(replica_path) == []
    assert ing.cell("c1")["resyncs"] == 1          # the first load only
    assert_converged(replica_path, c1)


def _raw_request(url, frame):
    sock = nanomsg.Socket(nanomsg.REQ)
    try:
        sock.set_int_option(nanomsg.SOL_SOCKET, nanomsg.RCVTIMEO, 5000)
        sock.connect(url)
        sock.send(frame)
        return sock.recv()
    finally:
        sock.close()


def test_control_under_the_wrong_key_gets_a_refusal_and_the_right_one_is_served(
        make_cell, keys):
    key, wrong = keys(), keys("wrong.key")
    c1 = make_cell("c1", key_file=key)
    c1.populate(10, seed=91)
    c1.start()
    refusal = {"ok": False, "error": "refused", "message": "request not authenticated"}
    for op in ("hello", "snapshot_begin", "digest"):
        plain = feed.encode_request(op)
        for frame in (plain, sealer_for("c1", wrong).seal_request(plain)[0],
                      sealer_for("c2", key).seal_request(plain)[0]):
            assert msgpack.unpackb(_raw_request(c1.control_url, frame)) == refusal
    good = Requester(c1.control_url, 5.0, sealer=sealer_for("c1", key))
    bad = Requester(c1.control_url, 5.0, sealer=sealer_for("c1", wrong))
    try:
        assert good.request("hello")["epoch"] == c1.epoch
        with pytest.raises(feed.ControlError) as info:
            bad.request("hello")
        assert info.value.error == "bad_signature" and "refused" in str(info.value)
        snap = good.request("snapshot_begin")
        # and its hypervisors, its services (as os-services and as zones read them)
        assert snap["total"] == 10 + c1.compute_nodes() + c1.services()
        good.request("snapshot_end", snapshot=snap["snapshot"])
    finally:
        good.close()
        bad.close()


def test_a_keyed_cell_and_an_appliance_without_a_key_apply_nothing(make_cell, make_ingest,
                                                                   replica_path, keys):
    c1 = make_cell("c1", key_file=keys())
    c1.populate(10, seed=101)
    c1.start()
    ing = make_ingest([c1.feed()])
    ing.start()
    c1.churn(20, seed=102, rate=1000)
    wait_for(lambda: any(r == "bad_signature" for r, _m in _dead(replica_path)), 15,
             what="a bad_signature dead letter")
    status = ing.cell("c1")
    assert status["auth"] == "none" and status["state"] != "live"
    assert "no key file is configured" in _dead(replica_path)[0][1]
    wait_for(lambda: "refused: request not authenticated" in (ing.cell("c1")["error"] or ""),
             15, what="the cell's refusal in status")
    assert _servers(replica_path) == set()
    assert "not authenticated" in ing.proc.output()      # the warning at start


def test_an_appliance_with_a_key_and_a_cell_without_one_apply_nothing(make_cell,
                                                                      make_ingest,
                                                                      replica_path, keys):
    c1 = make_cell("c1")
    c1.populate(10, seed=111)
    c1.start()
    ing = make_ingest([c1.feed(keys())])
    ing.start()
    c1.churn(20, seed=112, rate=1000)
    wait_for(lambda: any(r == "bad_signature" for r, _m in _dead(replica_path)), 15,
             what="a bad_signature dead letter")
    assert "not sealed" in _dead(replica_path)[0][1]
    wait_for(lambda: "this cell has no key file" in (ing.cell("c1")["error"] or ""), 15,
             what="the cell's refusal in status")
    assert ing.cell("c1")["state"] != "live"
    assert _servers(replica_path) == set()


def test_an_unusable_key_file_refuses_its_feed_until_fixed_and_ingest_runs_on(
        make_cell, make_ingest, replica_path, tmp_path, keys):
    """A key file that went wrong before ingest (re)started: that feed's messages are
    dead-lettered and its requests fail, saying why; the other feeds are served; once
    the file is fixed the feed catches up, with no restart."""
    import os
    key = keys()
    c1 = make_cell("c1", key_file=key)
    c1.populate(10, seed=131)
    c1.start()
    c2 = make_cell("c2")
    c2.populate(10, seed=132)
    c2.start()
    app_key = str(tmp_path / "app.key")
    shutil.copy(key, app_key)
    os.chmod(app_key, 0o644)
    ing = make_ingest([c1.feed(app_key), c2.feed()])
    ing.start()
    ing.wait_caught_up([c2])
    wait_for(lambda: "bad_key_file" in (ing.cell("c1")["error"] or ""), 15,
             what="the key file's error in status")
    assert "run 'chmod 600" in ing.cell("c1")["error"]
    wait_for(lambda: any("chmod 600" in m for _r, m in _dead(replica_path)), 15,
             what="a dead letter saying how to fix it")
    assert {r for r, _m in _dead(replica_path)} == {"bad_signature"}
    assert _servers(replica_path) == set() and ing.cell("c1")["auth_keys"] == []
    os.chmod(app_key, 0o600)
    status = ing.wait_caught_up([c1, c2], timeout=60)
    assert status["c1"]["auth_keys"] == list(read_key_file(key).ids)
    assert_converged(replica_path, c1)
