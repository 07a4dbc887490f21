"""The outbox: epoch, one trigger per way a server or flavor can change, gapless
seqs under concurrent writer processes, retention."""

from __future__ import annotations

import subprocess
import textwrap

import pytest

from replica.cell import connection, outbox, schema

from tests.conftest import ROOT
from tests.replica.cell.conftest import PYTHON, child_env

U1 = "11111111-1111-4111-8111-111111111111"
U2 = "22222222-2222-4222-8222-222222222222"
U3 = "33333333-3333-4333-8333-333333333333"


def events_after(conn, seq: int) -> list[tuple[str, str]]:
    return [(kind, key) for _s, kind, key in outbox.read_events(conn, seq, 10_000)]


@pytest.fixture
def conn(cell_db):
    c = connection.open_cell(cell_db)
    # three instances: U1 and U2 on host h1 (U2 soft-deleted), U3 on h2
    c.execute("INSERT INTO instances (id, uuid, host, deleted, project_id) VALUES "
              f"(1, '{U1}', 'h1', 0, 'p'), (2, '{U2}', 'h1', 2, 'p'), (3, '{U3}', 'h2', 0, 'p')")
    c.execute("INSERT INTO services (id, host, \"binary\", topic, deleted) VALUES "
              "(1, 'h1', 'nova-compute', 'compute', 0), (2, 'h1', 'nova-scheduler', 's', 0)")
    c.execute("INSERT INTO security_groups (id, name, project_id, deleted) VALUES "
              "(1, 'default', 'p', 0)")
    c.execute("INSERT INTO security_group_instance_association (id, security_group_id, "
              f"instance_uuid, deleted) VALUES (1, 1, '{U3}', 0), (2, 1, '{U1}', 0)")
    c.execute("INSERT INTO instance_groups (id, uuid, name, project_id) VALUES "
              "(1, 'g-1', 'grp', 'p')")
    c.execute(f"INSERT INTO instance_group_member (id, instance_uuid, group_id) VALUES "
              f"(1, '{U3}', 1)")
    yield c
    c.close()


def test_init_is_idempotent_and_a_new_database_gets_a_new_epoch(tmp_path):
    first = outbox.init_cell_db(str(tmp_path / "a.db"), "a")
    assert outbox.init_cell_db(str(tmp_path / "a.db"), "a") == first
    other = outbox.init_cell_db(str(tmp_path / "b.db"), "b")
    assert other != first and len(first) == 32
    conn = connection.open_cell(str(tmp_path / "a.db"))
    assert outbox.name_of(conn) == "a"
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert (outbox.outbox_head(conn), outbox.outbox_oldest(conn)) == (0, 1)


def test_init_installs_into_an_existing_database_without_touching_its_rows(tmp_path):
    db = str(tmp_path / "nova.db")
    conn = connection.open_cell(db, create=True)
    schema.create_cell_tables(conn)
    conn.execute(f"INSERT INTO instances (uuid, deleted) VALUES ('{U1}', 0)")
    conn.close()
    outbox.init_cell_db(db, "nova")
    conn = connection.open_cell(db)
    assert conn.execute("SELECT uuid FROM instances").fetchall() == [(U1,)]
    conn.execute(f"UPDATE instances SET display_name = 'x' WHERE uuid = '{U1}'")
    assert events_after(conn, 0) == [("server", U1)]


CHANGES = [
    # (statement, enqueued keys)
    (f"INSERT INTO instances (uuid, deleted) VALUES ('{U2[:-1]}9', 0)", [U2[:-1] + "9"]),
    (f"UPDATE instances SET vm_state = 'stopped' WHERE uuid = '{U1}'", [U1]),
    (f"UPDATE instances SET deleted = id WHERE uuid = '{U1}'", [U1]),
    (f"DELETE FROM instances WHERE uuid = '{U3}'", [U3]),
    (f"INSERT INTO instance_extra (instance_uuid, flavor) VALUES ('{U1}', '{{}}')", [U1]),
    (f"INSERT INTO instance_info_caches (instance_uuid, network_info) VALUES ('{U3}', '[]')",
     [U3]),
    (f"INSERT INTO instance_metadata (instance_uuid, key, value) VALUES ('{U1}', 'k', 'v')",
     [U1]),
    (f"INSERT INTO instance_system_metadata (instance_uuid, key, value) "
     f"VALUES ('{U1}', 'locked_reason', 'r')", [U1]),
    (f"INSERT INTO block_device_mapping (instance_uuid, volume_id) VALUES ('{U3}', 'v')", [U3]),
    ("INSERT INTO block_device_mapping (instance_uuid, volume_id) VALUES (NULL, 'v')", []),
    (f"INSERT INTO instance_faults (instance_uuid, code) VALUES ('{U1}', 500)", [U1]),
    (f"INSERT INTO tags (resource_id, tag) VALUES ('{U1}', 'prod')", [U1]),
    (f"INSERT INTO request_specs (instance_uuid, spec) VALUES ('{U1}', '{{}}')", [U1]),
    (f"UPDATE security_group_instance_association SET deleted = id WHERE instance_uuid = '{U1}'",
     [U1]),
    (f"INSERT INTO instance_group_member (instance_uuid, group_id) VALUES ('{U1}', 1)", [U1]),
    # fan-out: a compute service change enqueues the live instances on its host
    ("UPDATE services SET disabled = 1 WHERE id = 1", [U1]),
    ("UPDATE services SET forced_down = 1 WHERE id = 1", [U1]),
    ("UPDATE services SET host = 'h2' WHERE id = 1", [U3, U1]),
    ("DELETE FROM services WHERE id = 1", [U1]),
    ("INSERT INTO services (host, \"binary\", topic, deleted) "
     "VALUES ('h2', 'nova-compute', 'c', 0)", [U3]),
    # heartbeats and other binaries change nothing a server shows
    ("UPDATE services SET report_count = report_count + 1, updated_at = '2026-12-01 08:00:00'",
     []),
    ("UPDATE services SET disabled = 1 WHERE id = 2", []),
    # fan-out: security groups and server groups enqueue their members
    ("UPDATE security_groups SET name = 'renamed' WHERE id = 1", [U3, U1]),
    ("UPDATE security_groups SET description = 'd' WHERE id = 1", []),
    ("DELETE FROM security_groups WHERE id = 1", [U3, U1]),
    ("UPDATE instance_groups SET uuid = 'g-2' WHERE id = 1", [U3]),
]


@pytest.mark.parametrize("statement,keys", CHANGES, ids=[c[0][:60] for c in CHANGES])
def test_each_trigger_enqueues_the_right_key(conn, statement, keys):
    before = outbox.outbox_head(conn)
    conn.execute(statement)
    assert events_after(conn, before) == [("server", k) for k in keys]


def test_an_update_that_moves_a_row_enqueues_both_instances(conn):
    conn.execute(f"INSERT INTO instance_metadata (id, instance_uuid, key, value) "
                 f"VALUES (7, '{U1}', 'k', 'v')")
    before = outbox.outbox_head(conn)
    conn.execute(f"UPDATE instance_metadata SET instance_uuid = '{U3}' WHERE id = 7")
    assert events_after(conn, before) == [("server", U3), ("server", U1)]


def test_flavor_source_triggers(tmp_path):
    db = str(tmp_path / "flavors.db")
    outbox.init_cell_db(db, "flavors", flavors=True)
    conn = connection.open_cell(db)
    conn.execute("INSERT INTO flavors (id, name, memory_mb, vcpus, flavorid) "
                 "VALUES (1, 'm1.tiny', 512, 1, 'f1')")
    conn.execute("INSERT INTO flavor_extra_specs (key, value, flavor_id) VALUES ('a', 'b', 1)")
    conn.execute("INSERT INTO flavor_projects (flavor_id, project_id) VALUES (1, 'demo')")
    conn.execute("UPDATE flavor_extra_specs SET value = 'c'")
    conn.execute("UPDATE flavors SET flavorid = 'f2'")
    assert events_after(conn, 0) == [("flavor", "f1")] * 4 + [("flavor", "f2"), ("flavor", "f1")]
    # Nova deletes a flavor's specs and projects after the flavor: nothing to enqueue, no error
    before = outbox.outbox_head(conn)
    conn.execute("DELETE FROM flavors")
    conn.execute("DELETE FROM flavor_extra_specs")
    conn.execute("DELETE FROM flavor_projects")
    assert events_after(conn, before) == [("flavor", "f2")]


def test_a_rolled_back_transaction_leaves_no_gap(conn):
    before = outbox.outbox_head(conn)
    conn.execute("BEGIN")
    conn.execute(f"UPDATE instances SET vm_state = 'x' WHERE uuid = '{U1}'")
    conn.execute("ROLLBACK")
    conn.execute(f"UPDATE instances SET vm_state = 'y' WHERE uuid = '{U1}'")
    assert [s for s, _k, _key in outbox.read_events(conn, before, 10)] == [before + 1]


WRITER = textwrap.dedent("""
    import sys
    from replica.cell import connection
    db, tag, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    conn = connection.open_cell(db)
    for i in range(count):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO instances (uuid, deleted, display_name) VALUES (?, 0, ?)",
                     (f"{tag}-{i}", tag))
        conn.execute("INSERT INTO instance_metadata (instance_uuid, key, value) VALUES (?, 'k', 'v')",
                     (f"{tag}-{i}",))
        conn.execute("COMMIT" if i % 7 else "ROLLBACK")   # every 7th transaction rolls back
""")


def test_seqs_are_gapless_and_increasing_with_two_concurrent_writer_processes(cell_db):
    count = 300
    writers = [subprocess.Popen([PYTHON, "-c", WRITER, cell_db, tag, str(count)], cwd=ROOT,
                                env=child_env()) for tag in ("a", "b")]
    reader = connection.open_cell_reader(cell_db)
    try:
        # While they write, every committed prefix a reader can see is gapless.
        while any(w.poll() is None for w in writers):
            reader.execute("BEGIN")
            low, high, rows = reader.execute(
                f"SELECT min(seq), max(seq), count(*) FROM {outbox.OUTBOX}").fetchone()
            reader.execute("ROLLBACK")
            if rows:
                assert (low, high - low + 1) == (1, rows)
        assert [w.wait(60) for w in writers] == [0, 0]
        committed = sum(1 for i in range(count) if i % 7)
        seqs = [s for s, _k, _key in outbox.read_events(reader, 0, 100_000)]
        assert seqs == list(range(1, 2 * 2 * committed + 1))
        # each transaction's two events are adjacent: a commit is one contiguous run
        keys = [key for _s, _k, key in outbox.read_events(reader, 0, 100_000)]
        assert all(keys[i] == keys[i + 1] for i in range(0, len(keys), 2))
        assert {k.split("-")[0] for k in keys} == {"a", "b"}
    finally:
        for w in writers:
            if w.poll() is None:
                w.kill()
                w.wait()
        reader.close()


def test_prune_keeps_the_newest_events_and_never_reuses_a_seq(conn):
    for i in range(100):
        conn.execute(f"UPDATE instances SET progress = {i} WHERE uuid = '{U1}'")
    head = outbox.outbox_head(conn)
    assert outbox.prune(conn, keep_events=10, keep_seconds=3600) == head - 10
    assert (outbox.outbox_oldest(conn), outbox.outbox_head(conn)) == (head - 9, head)
    assert outbox.prune(conn, keep_events=10, keep_seconds=3600) == 0
    assert outbox.prune(conn, keep_events=0, keep_seconds=3600) == 10
    assert (outbox.outbox_oldest(conn), outbox.outbox_head(conn)) == (head + 1, head)
    conn.execute(f"UPDATE instances SET progress = 0 WHERE uuid = '{U1}'")
    assert [s for s, _k, _key in outbox.read_events(conn, 0, 10)] == [head + 1]


def test_prune_by_age_deletes_only_a_prefix(conn):
    conn.execute(f"DELETE FROM {outbox.OUTBOX}")      # the fixture's own events
    base = outbox.outbox_head(conn)
    for i in range(50):
        conn.execute(f"UPDATE instances SET progress = {i} WHERE uuid = '{U1}'")
    conn.execute(f"UPDATE {outbox.OUTBOX} SET ts = ts - 1000 WHERE seq <= ? OR seq = ?",
                 (base + 30, base + 40))
    assert outbox.prune(conn, keep_events=1000, keep_seconds=100) == 30
    assert outbox.outbox_oldest(conn) == base + 31   # base+40 is old too, base+31.. are not


def test_last_changed_reports_the_latest_retained_seq_per_key(conn):
    before = outbox.outbox_head(conn)
    conn.execute(f"UPDATE instances SET progress = 1 WHERE uuid = '{U1}'")
    conn.execute(f"UPDATE instances SET progress = 1 WHERE uuid = '{U3}'")
    conn.execute(f"UPDATE instances SET progress = 2 WHERE uuid = '{U1}'")
    assert outbox.last_changed(conn, "server", [U1, U3, "absent"]) == {
        U1: before + 3, U3: before + 2}
