"""One declaration per kind: the feed's, the replica's and the cell side's registries
name the same kinds, and each replica kind's table, columns and render agree."""

from __future__ import annotations

from replica import feed, kinds, render
from replica.cell import entity
from replica.store.connection import open_writer
from replica.store.writer import Writer


def test_every_feed_kind_is_declared_on_both_sides():
    assert set(kinds.KINDS) == set(feed.FEED_KINDS) == set(feed.KINDS)
    assert set(entity.SOURCE_KINDS) == set(feed.FEED_KINDS)
    for name, kind in kinds.KINDS.items():
        assert kind.name == name and kind.feed is feed.FEED_KINDS[name]
        assert kind.feed.key_field in kind.feed.fields
        assert kind.feed_role in kinds.FEED_ROLES


def test_each_kind_has_its_table_and_render(tmp_path):
    conn = open_writer(str(tmp_path / "replica.db"))
    try:
        for name, (columns, row) in kinds.renderers(render).items():
            kind = kinds.KINDS[name]
            table = tuple(r[1] for r in conn.execute(f"PRAGMA table_info({kind.table})"))
            assert columns == table, name
            for needed in (kind.key_column, kind.owner_column, "entity_hash", "bucket", "seq"):
                assert needed in columns, (name, needed)
            assert callable(row)
        writer = Writer(conn)     # every kind's render columns when none are given
        assert {n: t.name for n, t in writer.tables.items()} == {
            n: k.table for n, k in kinds.KINDS.items()}
    finally:
        conn.close()


def test_labels_are_distinct():
    labels = kinds.count_labels()
    assert len(set(labels.values())) == len(labels)
    assert labels[feed.KIND_SERVER] == "servers" and labels[feed.KIND_FLAVOR] == "flavors"


def test_a_stand_in_renderer_renders_what_it_has():
    class OnlyServers:
        SERVER_COLUMNS = ("uuid",)

        @staticmethod
        def server_row(*args):
            return ("x",)

    got = kinds.renderers(OnlyServers)
    assert got[feed.KIND_SERVER][0] == ("uuid",)
    assert got[feed.KIND_FLAVOR] == (render.FLAVOR_COLUMNS, render.flavor_row)
