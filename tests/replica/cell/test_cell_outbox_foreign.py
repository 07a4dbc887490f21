"""The outbox in databases this project did not make: the triggers run on the system
SQLite (Python's stdlib sqlite3, as Nova's writers use it), fit the tables and
columns that exist, and ``cell init`` creates and seeds nothing in an existing
database."""

from __future__ import annotations

import sqlite3
import subprocess
import time

import pytest

from replica.cell import connection, outbox, schema, sqlite_source

from tests.conftest import ROOT
from tests.replica.cell.conftest import PYTHON, child_env
from tests.replica.cell.test_cell_outbox import CHANGES, U1, U3

# Nova's cell database keeps these (as the cell database of this project does not):
NOVA_CELL_ONLY = (
    "CREATE TABLE instance_group_member (created_at DATETIME, updated_at DATETIME, "
    "deleted_at DATETIME, deleted INTEGER, id INTEGER PRIMARY KEY, instance_id VARCHAR(255), "
    "group_id INTEGER NOT NULL)",
    "CREATE TABLE instance_groups (id INTEGER PRIMARY KEY, uuid VARCHAR(36), name VARCHAR(255), "
    "project_id VARCHAR(255), deleted INTEGER)",
    "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)",
)
# ... and lacks these (they live in Nova's API database):
API_ONLY = ("request_specs", "instance_group_member", "instance_groups", "instance_group_policy")


def nova_like_cell(path: str) -> None:
    """A cell database shaped as Nova's: this project's cell tables without the API
    database's, Nova's own instance_group_member, alembic's version table."""
    conn = connection.open_cell(path, create=True)
    with conn:
        for statement in schema.CELL_TABLES:
            conn.execute(statement)
        for table in API_ONLY:
            conn.execute(f"DROP TABLE IF EXISTS {table}")
        for statement in NOVA_CELL_ONLY:
            conn.execute(statement)
        conn.execute("INSERT INTO alembic_version VALUES ('13863f4e1612')")
        conn.execute(f"INSERT INTO instances (id, uuid, host, deleted) VALUES (1, '{U1}', 'h1', 0)")
    conn.close()


def tables(path: str) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {name for (name,) in conn.execute("SELECT name FROM sqlite_master "
                                                 "WHERE type = 'table'")}
    finally:
        conn.close()


def test_the_triggers_run_on_the_system_sqlite(cell_db):
    """Every trigger fires through the stdlib sqlite3 module (the system library, older
    than apsw's) and stamps its events: a NULL ts would fail the writer's statement."""
    conn = sqlite3.connect(cell_db, isolation_level=None)
    conn.execute("INSERT INTO instances (id, uuid, host, deleted) VALUES "
                 f"(1, '{U1}', 'h1', 0), (3, '{U3}', 'h2', 0)")
    conn.execute("INSERT INTO services (id, host, \"binary\", topic, deleted) VALUES "
                 "(1, 'h1', 'nova-compute', 'compute', 0)")
    conn.execute("INSERT INTO security_groups (id, name, project_id, deleted) VALUES "
                 "(1, 'default', 'p', 0)")
    conn.execute("INSERT INTO instance_groups (id, uuid, name, project_id) VALUES "
                 "(1, 'g-1', 'grp', 'p')")
    for statement, _keys in CHANGES:
        conn.execute(statement)
    rows = conn.execute(f"SELECT count(*), count(ts), min(ts) FROM {outbox.OUTBOX}").fetchone()
    conn.close()
    assert rows[0] > 10 and rows[1] == rows[0] and abs(rows[2] - time.time()) < 600


def test_the_outbox_ddl_installs_with_the_system_sqlite(tmp_path):
    """The table, index and trigger DDL itself is accepted by the system SQLite."""
    db = str(tmp_path / "stdlib.db")
    conn = sqlite3.connect(db, isolation_level=None)
    for statement in schema.CELL_TABLES + schema.FLAVOR_TABLES + outbox.OUTBOX_DDL:
        conn.execute(statement)
    groups = outbox.cell_triggers() + outbox._flavor_triggers()
    for group in groups:
        for statement in group.statements:
            conn.execute(statement)
    conn.execute(f"INSERT INTO instances (uuid, deleted) VALUES ('{U1}', 0)")
    conn.execute("INSERT INTO flavors (id, flavorid, name, memory_mb, vcpus, root_gb) "
                 "VALUES (1, '1', 'm1', 512, 1, 1)")
    conn.execute("INSERT INTO flavor_extra_specs (key, value, flavor_id) VALUES ('k', 'v', 1)")
    got = conn.execute(f"SELECT kind, key FROM {outbox.OUTBOX} WHERE ts IS NOT NULL "
                       "ORDER BY seq").fetchall()
    conn.close()
    assert got == [("server", U1), ("flavor", "1"), ("flavor", "1")]
    assert sqlite3.sqlite_version_info >= (3, 8)


def test_install_into_a_nova_shaped_cell_skips_what_it_lacks(tmp_path):
    db = str(tmp_path / "nova_cell1.sqlite")
    nova_like_cell(db)
    before = tables(db)
    outbox.init_cell_db(db, "cell1")
    # nothing of this project's schema was added: only the outbox's own tables
    assert tables(db) - before - {"sqlite_sequence"} == {outbox.OUTBOX, outbox.META}
    conn = connection.open_cell(db)
    triggers = {name for (name,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    assert f"{outbox.OUTBOX}_instances_upd" in triggers
    assert not [t for t in triggers if "request_specs" in t or "instance_group" in t]
    # Nova's own writes to the tables without triggers go through
    conn.execute(f"INSERT INTO instance_group_member (instance_id, group_id, deleted) "
                 f"VALUES ('{U1}', 1, 0)")
    conn.execute("UPDATE instance_groups SET uuid = 'g-2'")
    conn.execute(f"UPDATE instances SET display_name = 'x' WHERE uuid = '{U1}'")
    assert [(k, key) for _s, k, key in outbox.read_events(conn, 0, 10)] == [("server", U1)]
    # and a server entity builds without the API database's tables
    source = sqlite_source.borrowed(conn)
    with source.entities.read_view():
        entity = source.entities.build("server", [U1])[U1]
    assert (entity["server_groups"], entity["scheduler_hints"]) == ([], {})
    conn.close()


def test_install_again_replaces_the_triggers_of_an_earlier_install(tmp_path):
    """An earlier install's triggers (other names, a timestamp only SQLite 3.42 has)
    are replaced, and its tables renamed with their history."""
    db = str(tmp_path / "old.db")
    conn = connection.open_cell(db, create=True)
    schema.create_cell_tables(conn)
    with conn:
        conn.execute("CREATE TABLE replica_outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                     "kind TEXT NOT NULL, key TEXT NOT NULL, "
                     "ts REAL NOT NULL DEFAULT (unixepoch('subsec')))")
        conn.execute("CREATE TABLE replica_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute("INSERT INTO replica_meta VALUES ('epoch', 'old-epoch')")
        conn.execute("CREATE TRIGGER replica_outbox_instances_ins AFTER INSERT ON instances "
                     "BEGIN INSERT INTO replica_outbox (kind, key) VALUES ('server', NEW.uuid); "
                     "END")
        conn.execute(f"INSERT INTO instances (uuid, deleted) VALUES ('{U1}', 0)")
    conn.close()
    assert outbox.init_cell_db(db, "c1") == "old-epoch"
    assert "replica_outbox" not in tables(db)
    system = sqlite3.connect(db, isolation_level=None)
    system.execute(f"INSERT INTO instances (uuid, deleted) VALUES ('{U3}', 0)")
    names = [n for (n,) in system.execute("SELECT name FROM sqlite_master WHERE "
                                          "type = 'trigger' AND name LIKE 'replica%'")]
    system.close()
    conn = connection.open_cell(db)
    assert [(s, key) for s, _k, key in outbox.read_events(conn, 0, 10)] == [(1, U1), (2, U3)]
    conn.close()
    assert names == []


def test_the_meta_rows_outlive_a_purge_of_shadow_tables(cell_db):
    """``nova-manage db purge --all`` deletes every shadow table's rows."""
    conn = connection.open_cell(cell_db)
    epoch = outbox.epoch_of(conn)
    conn.execute(f"INSERT INTO instances (uuid, deleted) VALUES ('{U1}', 0)")
    conn.execute(f"DELETE FROM {outbox.OUTBOX}")
    conn.execute(f"DELETE FROM {outbox.META}")
    assert outbox.epoch_of(conn) == epoch
    assert (outbox.outbox_head(conn), outbox.outbox_oldest(conn)) == (1, 2)
    conn.close()


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "appliance", *args], cwd=ROOT, env=child_env(),
                          capture_output=True, text=True, timeout=60)


def test_cell_init_never_seeds_an_existing_database(tmp_path):
    api = str(tmp_path / "nova_api.sqlite")
    conn = connection.open_cell(api, create=True)
    schema.create_flavor_tables(conn)
    conn.execute("CREATE TABLE build_requests (id INTEGER PRIMARY KEY, instance_uuid TEXT)")
    conn.close()
    before = tables(api)
    done = run_cli("cell", "init", "--db", api, "--name", "flavors", "--flavors")
    assert done.returncode == 0, done.stderr
    assert tables(api) - before - {"sqlite_sequence"} == {outbox.OUTBOX, outbox.META}
    system = sqlite3.connect(api)
    assert system.execute("SELECT count(*) FROM flavors").fetchone() == (0,)
    system.close()
    # a new database is still made a seeded flavor source
    fresh = str(tmp_path / "flavors.db")
    assert run_cli("cell", "init", "--db", fresh, "--name", "f", "--flavors").returncode == 0
    system = sqlite3.connect(fresh)
    assert system.execute("SELECT count(*) FROM flavors").fetchone()[0] > 0
    system.close()


def test_cell_init_refuses_a_database_that_is_neither(tmp_path):
    other = str(tmp_path / "other.sqlite")
    system = sqlite3.connect(other)
    system.execute("CREATE TABLE things (id INTEGER PRIMARY KEY)")
    system.close()
    done = run_cli("cell", "init", "--db", other, "--name", "x")
    assert done.returncode == 1 and "neither a cell database" in done.stderr
    assert tables(other) == {"things"}


@pytest.mark.parametrize("flavors", [False, True])
def test_cell_init_of_a_new_database_makes_this_projects_schema(tmp_path, flavors):
    db = str(tmp_path / "new.db")
    outbox.init_cell_db(db, "n", flavors=flavors)
    assert ("flavors" in tables(db)) is flavors and ("instances" in tables(db)) is not flavors
