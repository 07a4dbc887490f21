"""Rows rendered by the publisher (``replica.cell.prerender``) travel with the entities
(``replica.feed``: ``r`` and ``rv``) and are stored as they came by an ingest whose
render has that version; any other ingest renders the entities itself; a row that does
not fit its event is dead-lettered (``bad_row``) with its batch. Real encodings, real
render, a real database file; no sockets."""

import msgpack
import pytest

from replica import feed, render
from replica.cell import prerender
from replica.ingest import CellFeed, Ingest, IngestConfig
from replica.position import Position
from replica.states import CellState

from tests.replica.conftest import make_flavor, make_server

COLUMNS = render.SERVER_COLUMNS


@pytest.fixture
def ingest(replica_path):
    config = IngestConfig(replica_path, [CellFeed("c1", "ipc:///nonexistent/f",
                                                  "ipc:///nonexistent/c")],
                          "ipc:///nonexistent/i")
    ing = Ingest(config)
    link = ing.links["c1"]
    link.position = Position("c1", "E", 0)
    link.set_state(CellState.CATCHING_UP)
    link.set_state(CellState.LIVE)
    yield ing
    ing.conn.close()


def upserts(first, entities, kind=feed.KIND_SERVER):
    key = "uuid" if kind == feed.KIND_SERVER else "flavorid"
    return [feed.Event(first + i, kind, feed.OP_UPSERT, e[key], e)
            for i, e in enumerate(entities)]


def stored(ing, key):
    return ing.conn.execute(f"SELECT {', '.join(COLUMNS)} FROM servers WHERE uuid = ?",
                            (key,)).fetchall()


def fresh_row(cell, seq, entity):
    raw = feed.entity_bytes(entity)
    return render.server_row(cell, seq, feed.open_entity(feed.KIND_SERVER, entity["uuid"],
                                                         raw, "test"), feed.hash_bytes(raw))


def test_rows_and_their_version_round_trip_through_the_feed():
    server = make_server()
    events = prerender.with_rows("c1", upserts(7, [server]))
    batch = feed.decode_message(feed.encode_batch("c1", "E", events, "v9"), entities=False)
    assert batch.render_version == "v9"
    assert batch.events[0].row == list(fresh_row("c1", 7, server))
    plain = feed.decode_message(feed.encode_batch("c1", "E", upserts(1, [server])))
    assert plain.render_version is None and plain.events[0].row is None


def test_the_publisher_renders_the_last_upsert_of_each_key_only():
    one, other = make_server(), make_server()
    events = upserts(1, [one, other, one]) + [
        feed.Event(4, feed.KIND_SERVER, feed.OP_DELETE, "00000000-0000-4000-8000-000000000000",
                   None)]
    out = prerender.with_rows("c1", events)
    assert [e.row is not None for e in out] == [False, True, True, False]
    assert out[2].row == fresh_row("c1", 3, one)
    assert out[1].row == fresh_row("c1", 2, other)
    assert out[2].entity_hash == feed.hash_bytes(feed.entity_bytes(one))
    flavor = prerender.with_rows("api", upserts(1, [make_flavor()], feed.KIND_FLAVOR))[0]
    assert flavor.row == render.flavor_row("api", 1, make_flavor())


@pytest.mark.parametrize("row, version, error", [
    ({"not": "a list"}, None, "bad_event"),
    ([1, 2], 5, "malformed"),
])
def test_the_feed_refuses_a_row_that_is_not_a_list_and_a_version_that_is_not_text(
        row, version, error):
    server = make_server()
    wire = feed.encode_events(upserts(1, [server]))[0]
    message = {"v": 2, "t": "batch", "cell": "c1", "epoch": "E", "events": [{**wire, "r": row}]}
    if version is not None:
        message["rv"] = version
    with pytest.raises(feed.FeedError) as refused:
        feed.decode_message(msgpack.packb(message, use_bin_type=True))
    assert refused.value.reason == error


def test_a_tombstone_with_a_row_is_refused():
    wire = {"s": 1, "k": "server", "o": "d", "id": make_server()["uuid"], "e": None, "r": [1]}
    with pytest.raises(feed.FeedError, match="row is not a list of an upsert"):
        feed.decode_events([wire])


def test_rows_of_this_render_version_are_stored_as_they_came(ingest):
    link = ingest.links["c1"]
    server = make_server(display_name="from the entity")
    event = prerender.with_rows("c1", upserts(1, [server]))[0]
    # The publisher's row says another name: stored as it is (the entity is not rendered).
    row = list(event.row)
    row[COLUMNS.index("display_name")] = "from the row"
    sent = feed.Event(1, event.kind, event.op, event.key, event.entity, None, row)
    ingest.on_message(link, feed.encode_batch("c1", "E", [sent], render.RENDER_VERSION))
    ingest.commit()
    assert stored(ingest, server["uuid"]) == [tuple(row)]
    assert ingest.writer.load_positions()["c1"].seq == 1


def test_rows_of_another_render_version_are_ignored_and_the_entity_rendered(ingest):
    link = ingest.links["c1"]
    server = make_server(display_name="from the entity")
    event = prerender.with_rows("c1", upserts(1, [server]))[0]
    row = list(event.row)
    row[COLUMNS.index("display_name")] = "from the row"
    sent = feed.Event(1, event.kind, event.op, event.key, event.entity, None, row)
    ingest.on_message(link, feed.encode_batch("c1", "E", [sent], render.RENDER_VERSION + "x"))
    ingest.commit()
    assert stored(ingest, server["uuid"]) == [fresh_row("c1", 1, server)]


def _spoiled(at: str | None, value=None, drop: bool = False):
    server = make_server()
    event = prerender.with_rows("c1", upserts(1, [server]))[0]
    row = list(event.row)
    if drop:
        row.pop()
    elif at is not None:
        row[COLUMNS.index(at)] = value
    return feed.Event(1, event.kind, event.op, event.key, event.entity, None, row)


@pytest.mark.parametrize("event, says", [
    (_spoiled(None, drop=True), f"{len(COLUMNS) - 1} values for {len(COLUMNS)} columns"),
    (_spoiled("entity_hash", 12345), "entity hash is not the event's"),
    (_spoiled("seq", 2), "seq or entity hash is not the event's"),
    (_spoiled("cell", "c2"), "key, feed, seq"),
    (_spoiled("uuid", "00000000-0000-4000-8000-000000000000"), "key, feed, seq"),
    (_spoiled("d_base", ["a", "list"]), "column d_base holds a list"),
    (_spoiled("brief", None), "column brief is null"),
    (_spoiled("deleted", True), "column deleted holds a bool"),
], ids=["short", "hash", "seq", "cell", "key", "list", "null", "bool"])
def test_a_row_that_does_not_fit_its_event_is_dead_lettered_with_its_batch(ingest, event, says):
    link = ingest.links["c1"]
    good = prerender.with_rows("c1", upserts(2, [make_server()]))[0]
    ingest.on_message(link, feed.encode_batch("c1", "E", [event, good], render.RENDER_VERSION))
    ingest.commit()
    assert ingest.conn.execute("SELECT count(*) FROM servers").fetchall() == [(0,)]
    assert link.position.seq == 0
    letter = ingest.writer.dead_letters()[0]
    assert letter["reason"] == "bad_row"
    assert says in letter["message"]


def test_a_row_with_the_types_of_one_already_checked_passes_without_the_full_check(ingest):
    link = ingest.links["c1"]
    first, second = make_server(), make_server()
    events = prerender.with_rows("c1", upserts(1, [first, second]))
    assert tuple(map(type, events[0].row)) == tuple(map(type, events[1].row))
    ingest.on_message(link, feed.encode_batch("c1", "E", events, render.RENDER_VERSION))
    ingest.commit()
    assert len(ingest.writer._shapes[feed.KIND_SERVER].good) == 1
    assert stored(ingest, second["uuid"]) == [fresh_row("c1", 2, second)]
