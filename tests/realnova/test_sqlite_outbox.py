"""The SQLite outbox in the databases Nova itself makes (``nova-manage api_db sync`` /
``db sync``) and writes (Nova's objects, under the side environment's Python and its
system SQLite): installing it breaks none of Nova's writes, ``nova-manage db
archive_deleted_rows`` still works, ``cell init`` adds no data, and the outbox records
what Nova changed."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import apsw
import pytest

from replica.cell import outbox, sqlite_source
from replica.ingest import CellFeed

from tests.conftest import ROOT, wait_for
from tests.replica.cell.test_cell_entity import plans_off_the_key
from tests.realnova.novadb import NovaDeployment
from tests.replica.conftest import IngestProc, procs, read_rows, replica_path  # noqa: F401


def tables(path: str) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()


def outbox_keys(path: str) -> list[tuple[str, str]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"SELECT kind, key FROM {outbox.OUTBOX} WHERE ts IS NOT NULL "
                            "ORDER BY seq").fetchall()
    finally:
        conn.close()


def cell_init(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "appliance", "cell", "init", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def nova(tmp_path_factory):
    """Nova's databases with a flavor, a compute host and a server written before the
    outbox is installed, then the outbox installed by ``appliance cell init``."""
    deployment = NovaDeployment.on_sqlite(str(tmp_path_factory.mktemp("nova-sqlite")))
    deployment.create(separate_runs=True)           # the nova-manage program itself
    with deployment.writer() as writer:
        writer.create_flavor(name="m1.small", vcpus=1, memory_mb=2048, root_gb=20,
                             flavorid="2")
        writer.create_compute(host="compute-1")
        deployment.before = writer.build_server(user_id="u1", project_id="p1", flavor="2",
                                                name="before")["uuid"]
    paths = deployment.database_paths
    deployment.tables_before = {name: tables(path) for name, path in paths.items()}
    cell_init("--db", paths["cell1"], "--name", "cell1")
    cell_init("--db", paths["api"], "--name", "flavors", "--flavors")
    return deployment


def test_install_adds_only_the_outbox(nova):
    for name in ("cell1", "api"):
        added = tables(nova.database_paths[name]) - nova.tables_before[name] - {"sqlite_sequence"}
        assert added == {outbox.OUTBOX, outbox.META}, name
    assert nova.query("api", "SELECT flavorid FROM flavors") == [("2",)]   # nothing seeded


def test_nova_writes_archive_and_the_outbox_records_them(nova):
    paths = nova.database_paths
    with nova.writer() as writer:
        server = writer.build_server(user_id="u1", project_id="p1", flavor="2",
                                     name="after", metadata={"a": "1"})["uuid"]
        writer.update(uuid=server, name="renamed")                  # instance.save()
        writer.set_metadata(uuid=server, metadata={"b": "2"})       # instance_metadata only
        writer.set_flavor_extra_specs(flavorid="2", extra_specs={"hw:cpu_policy": "shared"})
        writer.service_disable(host="compute-1")                    # services, fan-out
        writer.delete(uuid=server)                                  # instance.destroy()
    archived = nova.archive_deleted_rows()
    assert "instances" in archived and "KeyError" not in archived, archived
    assert nova.query("cell1", "SELECT count(*) FROM instances WHERE uuid = ?",
                      (server,)) == [(0,)]
    assert nova.query("cell1", "SELECT count(*) FROM shadow_instances WHERE uuid = ?",
                      (server,)) == [(1,)]

    cell_keys = outbox_keys(paths["cell1"])
    assert cell_keys.count(("server", server)) >= 5       # build, save, metadata, delete
    assert ("server", nova.before) in cell_keys          # the host's service was disabled
    # and the instance actions Nova recorded for it (and archived with it), and the
    # hypervisor of the host whose service was disabled
    assert {kind for kind, _key in cell_keys} == {"hypervisor", "instance_action", "server",
                                                "service"}
    assert {key for kind, key in cell_keys if kind == "hypervisor"} == {
        uuid for (uuid,) in nova.query("cell1", "SELECT uuid FROM compute_nodes "
                                                "WHERE host = 'compute-1'")}
    assert any(kind == "instance_action" and key.startswith(f"{server}/")
               for kind, key in cell_keys)
    assert ("flavor", "2") in outbox_keys(paths["api"])

    # the entities build from Nova's cell database (no API database tables in it)
    source = sqlite_source.SqliteCellSource.open(paths["cell1"], "cell1")
    try:
        assert source.kinds == ["hypervisor", "instance_action", "server", "service"]
        with source.entities.read_view():
            built = source.entities.build("server", [nova.before, server])
        assert built[server] is None                     # archived: a tombstone
        assert built[nova.before]["display_name"] == "before"
        assert built[nova.before]["host_status"] == "MAINTENANCE"
    finally:
        source.close()


def test_every_server_of_nova_reaches_the_replica(nova, procs, replica_path, tmp_path):
    """The publisher on Nova's cell database and ingest: the servers Nova wrote before
    the outbox was installed and after it are all in the replica, and a change Nova
    makes now follows."""
    cell_db = nova.database_paths["cell1"]
    with nova.writer() as writer:
        writer.build_server(user_id="u2", project_id="p2", flavor="2", name="later")
    feed_url, control_url = f"ipc://{tmp_path}/cell1.feed", f"ipc://{tmp_path}/cell1.ctl"
    procs.start([sys.executable, "-m", "replica.cell.publisher", "--db", cell_db, "--name",
                 "cell1", "--feed", feed_url, "--control", control_url, "--heartbeat", "0.2"],
                str(tmp_path / "publisher.log"))
    wait_for(lambda: os.path.exists(control_url[len("ipc://"):]), 15, what="control socket")
    ingest = IngestProc(tmp_path, procs, replica_path, [CellFeed("cell1", feed_url,
                                                                control_url)])
    ingest.start()

    def replica_has(expected: set[str]):
        cell = ingest.cell("cell1")
        if cell["state"] != "live" or not os.path.exists(replica_path):
            return False
        return {u for (u,) in read_rows(replica_path, "SELECT uuid FROM servers")} == expected

    servers = {u for (u,) in nova.query("cell1", "SELECT uuid FROM instances")}
    assert nova.before in servers and len(servers) == 2
    wait_for(lambda: replica_has(servers), 60, what="every server of Nova in the replica")
    assert ingest.cell("cell1")["dead_letters"] == 0
    with nova.writer() as writer:
        writer.update(uuid=nova.before, name="renamed-by-nova")
    wait_for(lambda: read_rows(replica_path, "SELECT display_name FROM servers WHERE uuid = ?",
                               (nova.before,)) == [("renamed-by-nova",)],
             30, what="Nova's rename in the replica")


def test_purging_shadow_tables_keeps_the_epoch(nova):
    """``nova-manage db purge`` deletes shadow tables' rows: with ``--before`` it cannot
    date the outbox's (left alone), with ``--all`` it empties the outbox (a prune: the
    head goes on) and the meta rows stay."""
    cell_db = nova.database_paths["cell1"]
    conn = sqlite3.connect(cell_db)
    epoch = conn.execute(f"SELECT value FROM {outbox.META} WHERE name = 'epoch'").fetchone()
    head = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = ?",
                        (outbox.OUTBOX,)).fetchone()
    conn.close()
    events = len(outbox_keys(cell_db))
    nova.manage("db", "purge", "--before", "2000-01-01", "--verbose", ok_codes=(0, 3))
    assert len(outbox_keys(cell_db)) == events > 0
    nova.manage("db", "purge", "--all", "--verbose", ok_codes=(0, 3))
    assert outbox_keys(cell_db) == []
    conn = sqlite3.connect(cell_db)
    assert conn.execute(f"SELECT value FROM {outbox.META} WHERE name = 'epoch'"
                        ).fetchone() == epoch
    assert conn.execute("SELECT seq FROM sqlite_sequence WHERE name = ?",
                        (outbox.OUTBOX,)).fetchone() == head
    conn.close()
    with nova.writer() as writer:
        writer.update(uuid=nova.before, name="after-purge")
    assert outbox_keys(cell_db) == [("server", nova.before)]


def test_a_snapshot_page_reads_only_its_own_rows_in_novas_schema(nova):
    # The indexes are Nova's own here (its migrations made them): each child statement
    # of a snapshot page must still reach rows by the page's keys.
    for path in (nova.database_paths["cell1"], nova.database_paths["api"]):
        conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
        try:
            assert plans_off_the_key(conn) == {}, path
        finally:
            conn.close()
