"""Resync staging against what the cell holds: unchanged rows are kept, not rewritten."""

from replica import feed
from replica.position import Position
from replica.store.connection import open_reader

from tests.replica.store.conftest import upsert
from tests.replica.conftest import make_server


_upsert = upsert


def _rows(writer, cell):
    return {u: (seq, name) for u, seq, name in writer.conn.execute(
        "SELECT uuid, seq, display_name FROM servers WHERE cell = ?", (cell,))}


def test_held_hashes_let_unchanged_entities_be_kept_without_a_row(setup):
    writer, render, path = setup
    keep, change, drop, other = (make_server() for _ in range(4))
    writer.apply([_upsert(render, "c1", 1, keep), _upsert(render, "c1", 2, change),
                  _upsert(render, "c1", 3, drop), _upsert(render, "c2", 1, other)],
                 [Position("c1", "old", 3), Position("c2", "e2", 1)])
    writer.stage_begin("c1")
    assert writer.held_hash(feed.KIND_SERVER, keep["uuid"]) == feed.entity_hash(keep)
    assert writer.held_hash(feed.KIND_SERVER, other["uuid"]) is None   # another cell's
    writer.keep(feed.KIND_SERVER, [keep["uuid"]])
    new = make_server()
    changed = dict(change, display_name="x")
    writer.stage(feed.KIND_SERVER, [render.server_row("c1", 10, changed),
                                    render.server_row("c1", 10, new)])
    assert writer.staged_count() == 2
    reader = open_reader(path)
    assert reader.execute("SELECT count(*) FROM servers WHERE cell='c1'").fetchall() == [(3,)]
    assert writer.swap(Position("c1", "new", 10)) == {"server": 3, "flavor": 0}
    rows = _rows(writer, "c1")
    assert rows == {keep["uuid"]: (1, keep["display_name"]), change["uuid"]: (10, "x"),
                    new["uuid"]: (10, new["display_name"])}
    assert _rows(writer, "c2") == {other["uuid"]: (1, other["display_name"])}
    assert writer.load_positions()["c1"] == Position("c1", "new", 10)
    assert writer.staged_count() == 0
    reader.close()


def test_staged_rows_equal_to_the_held_ones_are_not_rewritten(setup):
    writer, render, _ = setup
    servers = [make_server() for _ in range(5)]
    writer.apply([_upsert(render, "c1", i + 1, s) for i, s in enumerate(servers)],
                 [Position("c1", "e", 5)])
    writer.stage_begin("c1")
    writer.stage(feed.KIND_SERVER, [render.server_row("c1", 9, s) for s in servers[:4]])
    assert writer.staged_count() == 0
    writer.swap(Position("c1", "e", 9))
    assert sorted(seq for seq, _ in _rows(writer, "c1").values()) == [1, 2, 3, 4]


def test_a_key_taken_over_by_another_feed_during_staging_stays_with_it(setup):
    writer, render, _ = setup
    moved, stays = make_server(), make_server()
    writer.apply([_upsert(render, "c1", 1, moved), _upsert(render, "c1", 2, stays)],
                 [Position("c1", "e", 2)])
    writer.stage_begin("c1")
    writer.keep(feed.KIND_SERVER, [stays["uuid"]])   # the snapshot lacks "moved"
    writer.apply([_upsert(render, "c2", 1, moved)], [Position("c2", "e2", 1)])
    writer.swap(Position("c1", "e", 3))
    assert set(_rows(writer, "c1")) == {stays["uuid"]}
    assert set(_rows(writer, "c2")) == {moved["uuid"]}


def test_an_upsert_overwrites_the_row_in_place(setup):
    writer, render, _ = setup
    s = make_server()
    writer.apply([_upsert(render, "c1", 1, s)], [Position("c1", "e", 1)])
    rowid = writer.conn.execute("SELECT rowid FROM servers").fetchall()[0][0]
    writer.apply([_upsert(render, "c1", 2, dict(s, display_name="renamed"))],
                 [Position("c1", "e", 2)])
    assert writer.conn.execute("SELECT rowid, display_name, seq FROM servers").fetchall() == \
        [(rowid, "renamed", 2)]
    writer.apply([_upsert(render, "c2", 3, dict(s, display_name="moved"))])
    assert writer.conn.execute("SELECT cell, display_name FROM servers").fetchall() == \
        [("c2", "moved")]
