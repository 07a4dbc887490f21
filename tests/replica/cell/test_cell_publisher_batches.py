"""The publisher's batches, in-process: a batch too big for one message goes out as
several, in seq order, each under the byte cap; one that fits is one message."""

from __future__ import annotations

import threading
import time

import nanomsg
import pytest

from replica import feed
from replica.cell import publisher, simulator

from tests.replica.cell.conftest import Subscriber, head_of


@pytest.fixture
def running(cell_db, tmp_path):
    simulator.populate(cell_db, 40, 2, seed=3)
    config = publisher.PublisherConfig(cell_db, "c1", f"ipc://{tmp_path}/c1.feed",
                                       f"ipc://{tmp_path}/c1.ctl", control_process=False)
    pub = publisher.Publisher(config, threading.Event())
    pub.open_sockets(control=False)
    sub = Subscriber(config.feed_url)
    yield pub, sub
    sub.close()
    pub.close()


def publish_all_again(pub, sub) -> list[bytes]:
    """Publish the whole outbox again; the raw messages received."""
    head = head_of(pub.config.db)
    sub.sock.set_int_option(nanomsg.SOL_SOCKET, nanomsg.RCVTIMEO, 200)
    deadline = time.monotonic() + 10
    while True:      # the SUB connects asynchronously: publish again until it hears
        assert time.monotonic() < deadline, "the subscriber heard nothing"
        pub.last = 0
        pub.publish_pending()
        try:
            received = [sub.sock.recv()]
        except nanomsg.NanoMsgAPIError:
            continue
        if feed.decode_message(received[0]).first_seq == 1:
            break
    while feed.decode_message(received[-1]).last_seq < head:
        received.append(sub.sock.recv())
    return received


def test_a_batch_over_the_byte_cap_is_split_in_order(running, monkeypatch):
    pub, sub = running
    monkeypatch.setattr(publisher, "BATCH_MAX_BYTES", 30_000)
    messages = publish_all_again(pub, sub)
    assert len(messages) > 2
    seqs = [e.seq for data in messages for e in feed.decode_message(data).events]
    assert seqs == list(range(1, head_of(pub.config.db) + 1))
    assert all(len(data) <= 30_000 + 8_000 for data in messages)   # the cap is an estimate


def test_a_batch_under_the_byte_cap_is_one_message(running):
    pub, sub = running
    messages = publish_all_again(pub, sub)
    assert len(messages) == 1
    assert [e.seq for e in feed.decode_message(messages[0]).events] == \
        list(range(1, head_of(pub.config.db) + 1))
