"""Property-based test of the feed decoder as ingest uses it: whatever bytes arrive,
``on_message`` does not raise, and the message is applied whole, dead-lettered with a
reason, or changes nothing but a flag (a gap, a claim of another epoch for hello to
judge). ``FUZZ_EXAMPLES`` raises the budget."""

from __future__ import annotations

import os
import tempfile

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replica import feed
from replica.ingest import CellFeed, Ingest, IngestConfig
from replica.position import Position
from replica.states import CellState

from tests.replica.conftest import StandInRender, make_server

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "60"))

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2 ** 63,
                                                          max_value=2 ** 64 - 1),
                    st.floats(allow_nan=False), st.text(max_size=20), st.binary(max_size=20))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)
FIELDS = ["v", "t", "cell", "epoch", "events", "head", "oldest", "ts"]
EVENT_FIELDS = ["s", "k", "o", "id", "e"]


def _valid_batch(n: int) -> dict:
    servers = [make_server() for _ in range(n)]
    events = [feed.Event(i + 1, feed.KIND_SERVER, feed.OP_UPSERT, s["uuid"], s)
              for i, s in enumerate(servers)]
    return {"v": feed.FEED_VERSION, "t": "batch", "cell": "c1", "epoch": "E",
            "events": feed.encode_events(events)}


@st.composite
def messages(draw):
    kind = draw(st.sampled_from(["bytes", "batch", "event", "heartbeat"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "heartbeat":
        obj = {"v": feed.FEED_VERSION, "t": "hb", "cell": "c1", "epoch": "E", "head": 1,
               "oldest": 1, "ts": 0.0}
    else:
        obj = _valid_batch(draw(st.integers(min_value=1, max_value=3)))
    if kind == "event":
        event = obj["events"][draw(st.integers(0, len(obj["events"]) - 1))]
        event[draw(st.sampled_from(EVENT_FIELDS))] = draw(VALUES)
    for _ in range(draw(st.integers(0, 2))):
        field = draw(st.sampled_from(FIELDS))
        if draw(st.booleans()):
            obj[field] = draw(VALUES)
        else:
            obj.pop(field, None)
    data = msgpack.packb(obj, use_bin_type=True)
    if draw(st.booleans()):
        cut = draw(st.integers(0, len(data)))
        data = data[:cut]
    return data


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=messages())
def test_every_message_is_applied_whole_or_dead_lettered(data):
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "replica.db")
        config = IngestConfig(path, [CellFeed("c1", "ipc:///nonexistent/f",
                                              "ipc:///nonexistent/c")],
                              "ipc:///nonexistent/i")
        ing = Ingest(config, renderer=StandInRender(path))
        try:
            link = ing.links["c1"]
            link.position = Position("c1", "E", 0)
            link.set_state(CellState.CATCHING_UP)
            link.set_state(CellState.LIVE)
            ing.on_message(link, data)           # never raises
            ing.commit()
            dead = ing.writer.dead_letters()
            rows = ing.conn.execute("SELECT count(*) FROM servers").fetchall()[0][0]
            seq = ing.writer.load_positions().get("c1")
            if dead:
                assert len(dead) == 1 and dead[0]["reason"] and dead[0]["reason"] != "internal"
                assert rows == 0
            elif rows:
                # applied whole: every event of the batch, the position at its last seq
                batch = feed.decode_message(data)
                assert rows == len({e.key for e in batch.events})
                assert seq.seq == batch.last_seq
            else:
                assert seq is None or seq.seq == 0
        finally:
            ing.conn.close()
