"""The writer's statements on a real SQLite file, with stand-in rows."""

import apsw
import pytest

from replica import feed
from replica.position import Position
from replica.store.connection import open_reader, open_writer
from replica.store.writer import Change, DeadLetter

from tests.replica.store.conftest import upsert
from tests.replica.conftest import make_flavor, make_server


_upsert = upsert


def test_apply_writes_rows_and_position_in_one_transaction(setup):
    writer, render, path = setup
    servers = [make_server() for _ in range(3)]
    writer.apply([_upsert(render, "c1", i + 1, s) for i, s in enumerate(servers)],
                 [Position("c1", "e1", 3)])
    assert writer.load_positions() == {"c1": Position("c1", "e1", 3)}
    reader = open_reader(path)
    assert sorted(r[0] for r in reader.execute("SELECT uuid FROM servers")) == \
        sorted(s["uuid"] for s in servers)
    # A failing statement rolls back the rows and the position together.
    bad = Change(feed.KIND_SERVER, "x", "c1", ("too", "short"))
    with pytest.raises(apsw.Error):
        writer.apply([_upsert(render, "c1", 4, make_server()), bad], [Position("c1", "e1", 5)])
    assert writer.load_positions()["c1"].seq == 3
    assert reader.execute("SELECT count(*) FROM servers").fetchall()[0][0] == 3
    reader.close()


def test_last_change_of_a_key_wins_and_tombstones_delete(setup):
    writer, render, _ = setup
    s = make_server()
    writer.apply([_upsert(render, "c1", 1, s),
                  _upsert(render, "c1", 2, dict(s, display_name="renamed")),
                  Change(feed.KIND_SERVER, s["uuid"], "c1", None),
                  _upsert(render, "c1", 4, dict(s, display_name="back"))],
                 [Position("c1", "e", 4)])
    assert writer.conn.execute("SELECT display_name, seq FROM servers").fetchall() == [("back", 4)]
    writer.apply([Change(feed.KIND_SERVER, s["uuid"], "c2", None)])  # another cell's: kept
    assert writer.counts("c1")["server"] == 1
    writer.apply([Change(feed.KIND_SERVER, s["uuid"], "c1", None)], [Position("c1", "e", 5)])
    assert writer.counts("c1") == {"server": 0, "flavor": 0}


@pytest.mark.parametrize("change", [
    {"display_name": "renamed"},                                  # stable columns kept
    {"deleted": True},                                            # soft delete
    {"project_id": "moved"},
    {"created_at": "2026-12-01T00:00:00.000000", "display_name": "both"},
    {"instance_name": ""},                                        # in_cell 1 -> 0
])
def test_an_upsert_writes_every_column_whichever_columns_changed(setup, change):
    writer, render, _ = setup
    s, other = make_server(), make_server()
    writer.apply([_upsert(render, "c1", 1, s), _upsert(render, "c1", 2, other)])
    new = dict(s, **change)
    writer.apply([_upsert(render, "c1", 3, new)])
    names = ", ".join(render.SERVER_COLUMNS)
    got = writer.conn.execute(f"SELECT {names} FROM servers WHERE uuid = ?",
                              (s["uuid"],)).fetchall()
    assert got == [render.server_row("c1", 3, new)]
    untouched = writer.conn.execute(f"SELECT {names} FROM servers WHERE uuid = ?",
                                    (other["uuid"],)).fetchall()
    assert untouched == [render.server_row("c1", 2, other)]


def test_one_group_of_held_keys_changed_or_not_and_new_keys_writes_each_row(setup):
    # Held keys are updated in place, the others inserted; a held row whose stable
    # columns differ (here soft-deleted, and moved to another project) is rewritten
    # whole, in the same group as the rest.
    writer, render, _ = setup
    same, deleted, moved, other = (make_server() for _ in range(4))
    writer.apply([_upsert(render, "c1", i + 1, s)
                  for i, s in enumerate((same, deleted, moved, other))])
    fresh = [make_server() for _ in range(2)]
    group = [dict(same, display_name="renamed"), dict(deleted, deleted=True),
             dict(moved, project_id="elsewhere"), *fresh]
    writer.apply([_upsert(render, "c1", 10 + i, s) for i, s in enumerate(group)])
    names = ", ".join(render.SERVER_COLUMNS)
    rows = {row[0]: row for row in writer.conn.execute(f"SELECT {names} FROM servers")}
    assert len(rows) == 6
    for i, s in enumerate(group):
        assert rows[s["uuid"]] == render.server_row("c1", 10 + i, s)
    assert rows[other["uuid"]] == render.server_row("c1", 4, other)


def test_a_group_of_held_keys_only_writes_each_row_stable_columns_changed_or_not(setup):
    # Every key of the group is held (the usual group of a live feed): the same in-place
    # update, and the rows whose stable columns differ rewritten whole.
    writer, render, _ = setup
    servers = [make_server() for _ in range(4)]
    writer.apply([_upsert(render, "c1", i + 1, s) for i, s in enumerate(servers)])
    group = [dict(servers[0], display_name="renamed"), dict(servers[1], deleted=True),
             dict(servers[2], project_id="elsewhere"), servers[3]]
    writer.apply([_upsert(render, "c1", 10 + i, s) for i, s in enumerate(group)])
    names = ", ".join(render.SERVER_COLUMNS)
    rows = {row[0]: row for row in writer.conn.execute(f"SELECT {names} FROM servers")}
    assert rows == {s["uuid"]: render.server_row("c1", 10 + i, s) for i, s in enumerate(group)}


def test_a_key_another_cell_writes_moves_to_that_cell(setup):
    writer, render, _ = setup
    s = make_server()
    writer.apply([_upsert(render, "c1", 1, s)])
    writer.apply([_upsert(render, "c2", 7, dict(s, display_name="in c2"))])
    assert writer.conn.execute("SELECT cell, seq, display_name FROM servers").fetchall() == [
        ("c2", 7, "in c2")]


def test_dead_letters_are_stored_with_reason_and_counted(setup):
    writer, _, _ = setup
    writer.add_dead_letters([DeadLetter("c1", "malformed", "not msgpack", b"\x00" * 5000, 1.0),
                             DeadLetter(None, "unknown_version", "v=9", b"x", 2.0)])
    assert writer.dead_letter_counts() == {"c1": 1, None: 1}
    letters = writer.dead_letters()
    assert [d["reason"] for d in letters] == ["unknown_version", "malformed"]
    assert len(letters[1]["payload"]) == 512


def test_swap_replaces_the_cell_atomically_and_leaves_other_cells(setup):
    writer, render, path = setup
    keep, change, drop = make_server(), make_server(), make_server()
    other = make_server()
    writer.apply([_upsert(render, "c1", 1, keep), _upsert(render, "c1", 2, change),
                  _upsert(render, "c1", 3, drop), _upsert(render, "c2", 1, other)],
                 [Position("c1", "old", 3), Position("c2", "e2", 1)])
    new = make_server()
    writer.stage_begin()
    writer.stage(feed.KIND_SERVER, [render.server_row("c1", 10, keep),
                                    render.server_row("c1", 10, dict(change, display_name="x")),
                                    render.server_row("c1", 10, new)])
    writer.stage(feed.KIND_FLAVOR, [render.flavor_row("c1", 10, make_flavor("7"))])
    reader = open_reader(path)
    # Staged rows are invisible to readers until the swap commits.
    assert reader.execute("SELECT count(*) FROM servers WHERE cell='c1'").fetchall() == [(3,)]
    counts = writer.swap(Position("c1", "new", 10))
    assert counts == {"server": 3, "flavor": 1}
    rows = dict(reader.execute("SELECT uuid, display_name FROM servers WHERE cell='c1'"))
    assert set(rows) == {keep["uuid"], change["uuid"], new["uuid"]}
    assert rows[change["uuid"]] == "x"
    assert reader.execute("SELECT uuid FROM servers WHERE cell='c2'").fetchall() == \
        [(other["uuid"],)]
    assert writer.load_positions()["c1"] == Position("c1", "new", 10)
    assert writer.staged_count() == 0
    reader.close()


def test_digests_and_bucket_entities_match_the_feed_functions(setup):
    writer, render, _ = setup
    servers = [make_server() for _ in range(50)]
    writer.apply([_upsert(render, "c1", i + 1, s) for i, s in enumerate(servers)],
                 [Position("c1", "e", 50)])
    expected = [[0, 0] for _ in range(feed.DIGEST_BUCKETS)]
    for s in servers:
        b = expected[feed.bucket_of(s["uuid"])]
        b[0] += 1
        b[1] += feed.entity_hash(s)
    assert writer.digests("c1") == expected
    assert writer.digests("nope") == [[0, 0]] * feed.DIGEST_BUCKETS
    one = servers[0]
    got = writer.bucket_entities("c1", feed.bucket_of(one["uuid"]))
    assert got[one["uuid"]] == ("server", feed.entity_hash(one), 1)


def test_a_new_replica_uses_large_pages(tmp_path):
    from replica.store import connection
    conn = connection.open_writer(str(tmp_path / "fresh.db"))
    assert conn.execute("PRAGMA page_size").fetchall()[0][0] == connection.PAGE_SIZE
    assert conn.execute("PRAGMA journal_mode").fetchall()[0][0] == "wal"
