"""The binlog tailer on Nova's own databases: attached to an empty MariaDB before
nova-manage creates the schema (Nova's migrations stream through it), then Nova's
objects write flavors, hosts and servers, and every write journals the keys of
what it changed (and a heartbeat nothing)."""

from __future__ import annotations

import threading
import time

import pytest

from replica.cell import binlog, mysql

from tests.conftest import wait_for
from tests.realnova.mariadb import mariadb_fixture, scratch_dir
from tests.realnova.novadb import NovaDeployment

mariadb = mariadb_fixture(scope="module")

REPLICA_USER = "replica"
REPLICA_PASSWORD = "replica-secret"


@pytest.fixture(scope="module")
def tailed_nova(mariadb):
    """The tailer, started on the empty server; then Nova's deployment made by
    nova-manage. Yields (deployment, tailer, change_log)."""
    mariadb.create_replica_user(REPLICA_USER, REPLICA_PASSWORD, ["nova_cell1", "nova_api"])
    with scratch_dir("binlog-nova") as workdir:
        cell = mysql.MySQLURL(REPLICA_USER, REPLICA_PASSWORD, mariadb.host, mariadb.port,
                              "nova_cell1")
        source = binlog.Source(cell, cell.with_database("nova_api"),
                               f"{workdir}/cell1.journal")
        change_log = binlog.open_change_log(source)
        stop = threading.Event()
        tailer = binlog.Tailer(source, stop)
        thread = threading.Thread(target=tailer.run, name="binlog-tailer")
        thread.start()
        tailer.cpu_clock = time.pthread_getcpuclockid(thread.ident)
        try:
            deployment = NovaDeployment.on_mariadb(mariadb, workdir).create()
            yield deployment, tailer, change_log
        finally:
            stop.set()
            thread.join(30)
            change_log.close()
        assert not thread.is_alive()


def caught_up(change_log, mariadb) -> int:
    """Wait until the journal has consumed everything the server binlogged; its head."""
    wait_for(lambda: change_log.state().position == mariadb.gtid_binlog_pos(), timeout=60,
             what="the journal caught up with the binlog")
    return change_log.head()


def keys_after(change_log, seq: int) -> set[tuple[str, str]]:
    return {(kind, key) for _seq, kind, key in change_log.events_after(seq, 1_000_000)}


def test_nova_migrations_stream_through(mariadb, tailed_nova):
    _deployment, tailer, change_log = tailed_nova
    caught_up(change_log, mariadb)
    assert tailer.stats.reconnects == 0 and tailer.stats.new_epochs == 0, tailer.stats
    assert tailer.stats.transactions > 100        # Nova's DDL and data migrations


def test_nova_writes_journal_the_keys_of_what_they_change(mariadb, tailed_nova):
    deployment, _tailer, change_log = tailed_nova
    with deployment.writer() as nova:
        mark = caught_up(change_log, mariadb)
        nova.create_flavor(name="m1.binlog", vcpus=1, memory_mb=512, root_gb=1,
                           flavorid="binlog-1", extra_specs={"hw:cpu_policy": "shared"})
        caught_up(change_log, mariadb)
        assert keys_after(change_log, mark) == {("flavor", "binlog-1")}

        nova.create_compute(host="binlog-compute", az="az-1")
        mark = caught_up(change_log, mariadb)
        first = nova.build_server(user_id="u1", project_id="p1", flavor="binlog-1",
                                  name="vm-1", host="binlog-compute",
                                  metadata={"role": "web"}, tags=["blue"])
        second = nova.build_server(user_id="u1", project_id="p1", flavor="binlog-1",
                                   name="vm-2", host="binlog-compute")
        caught_up(change_log, mariadb)
        servers = {("server", first["uuid"]), ("server", second["uuid"])}
        assert keys_after(change_log, mark) == servers

        # Metadata touches only instance_metadata: the server's key all the same.
        mark = caught_up(change_log, mariadb)
        nova.set_metadata(uuid=first["uuid"], metadata={"tier": "1"})
        caught_up(change_log, mariadb)
        assert keys_after(change_log, mark) == {("server", first["uuid"])}

        # A heartbeat within service_down_time changes no entity.
        mark = caught_up(change_log, mariadb)
        position = change_log.state().position
        nova.service_heartbeat(host="binlog-compute")
        caught_up(change_log, mariadb)
        assert change_log.state().position != position
        assert change_log.head() == mark

        # Disabling the compute service changes host_status of its servers.
        mark = caught_up(change_log, mariadb)
        nova.service_disable(host="binlog-compute")
        caught_up(change_log, mariadb)
        assert keys_after(change_log, mark) == servers

        # A delete (Nova's soft delete of ~20 rows over several tables), then
        # archive_deleted_rows moving them to the shadow tables.
        mark = caught_up(change_log, mariadb)
        nova.delete(uuid=second["uuid"])
        caught_up(change_log, mariadb)
        assert keys_after(change_log, mark) == {("server", second["uuid"])}
    mark = caught_up(change_log, mariadb)
    deployment.archive_deleted_rows()
    caught_up(change_log, mariadb)
    assert ("server", second["uuid"]) in keys_after(change_log, mark)
    assert ("server", first["uuid"]) not in keys_after(change_log, mark)


def test_tailer_cost_of_nova_writes(mariadb, tailed_nova):
    """Printed (run with -s): the tailer's CPU per Nova transaction and per journaled
    key while Nova's objects build servers step by step and change them."""
    deployment, tailer, change_log = tailed_nova
    with deployment.writer() as nova:
        nova.create_compute(host="cost-compute", az="az-1")
        caught_up(change_log, mariadb)
        before = (time.clock_gettime(tailer.cpu_clock), tailer.stats.transactions,
                  tailer.stats.rows, change_log.head())
        built = nova.build_servers(count=40, stepwise=True, user_id="u2", project_id="p2",
                                   flavor="binlog-1", host="cost-compute",
                                   metadata={"k": "v"}, tags=["t"])
        for server in built["servers"][:20]:
            nova.stop(uuid=server["uuid"])
            nova.set_metadata(uuid=server["uuid"], metadata={"n": "1"})
        caught_up(change_log, mariadb)
        cpu = time.clock_gettime(tailer.cpu_clock) - before[0]
        transactions = tailer.stats.transactions - before[1]
        rows = tailer.stats.rows - before[2]
        keys = change_log.head() - before[3]
    assert keys >= 80
    print(f"\nNova writes: {transactions} transactions, {rows} watched rows, {keys} keys "
          f"journaled; tailer CPU {cpu / transactions * 1e6:.0f} us/transaction, "
          f"{cpu / keys * 1e6:.0f} us/key")
