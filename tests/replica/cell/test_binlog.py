"""The binlog tailer against a real MariaDB (row binlog, GTIDs), read with a
replica-grants-only user: which rows change which entity keys, transactions
whole or not at all, DDL mid-stream, stop and restart."""

from __future__ import annotations

import dataclasses
import threading

import pymysql
import pytest

from replica import feed
from replica.cell import binlog, journal, mysql

from tests.realnova.mariadb import mariadb_fixture
from tests.replica.cell.binlog_helpers import (API_DB, CELL_DB, Writer, create_nova_tables,
                                               events, journal_rows, source_for, tailing,
                                               wait_head)

mariadb = mariadb_fixture(scope="module")


@pytest.fixture(scope="module")
def nova(mariadb):
    create_nova_tables(mariadb)
    return mariadb


@pytest.fixture
def source(nova, tmp_path):
    return source_for(nova, str(tmp_path / "cell1.journal"))


@pytest.fixture
def cell(nova):
    writer = Writer(nova, CELL_DB)
    yield writer
    writer.close()


@pytest.fixture
def api(nova):
    writer = Writer(nova, API_DB)
    yield writer
    writer.close()


def test_first_attach_starts_an_empty_epoch_at_the_servers_position(nova, source):
    change_log = binlog.open_change_log(source)
    try:
        state = change_log.state()
        assert state.position == nova.gtid_binlog_pos()
        assert change_log.head() == 0 and change_log.oldest() == 1
        assert change_log.events_after(0, 10) == []
        assert len(change_log.epoch()) == 32
    finally:
        change_log.close()


def test_insert_update_delete_give_the_rows_keys(nova, source, cell):
    with tailing(source) as (_tailer, change_log):
        cell.run("INSERT INTO instances (uuid, host, vm_state) VALUES ('iud-1', 'h1', 'building')")
        cell.run("UPDATE instances SET vm_state = 'active' WHERE uuid = 'iud-1'")
        cell.run("UPDATE instances SET uuid = 'iud-2' WHERE uuid = 'iud-1'")   # both keys
        cell.run("DELETE FROM instances WHERE uuid = 'iud-2'")
        wait_head(change_log, 5)
        rows = journal_rows(change_log)
        assert [(seq, kind, key) for seq, kind, key, _gtid in rows] == [
            (1, "server", "iud-1"), (2, "server", "iud-1"), (3, "server", "iud-1"),
            (4, "server", "iud-2"), (5, "server", "iud-2")]
        gtids = [gtid for *_rest, gtid in rows]
        assert gtids[2] == gtids[3] and len(set(gtids)) == 4
        assert change_log.state().position == nova.gtid_binlog_pos()


def test_child_rows_change_their_servers_key(source, cell, api):
    with tailing(source) as (_tailer, change_log):
        cell.run("INSERT INTO instance_metadata (instance_uuid, `key`, value) "
                 "VALUES ('child-1', 'k', 'v')")
        cell.run("UPDATE instance_metadata SET deleted = id WHERE instance_uuid = 'child-1'")
        cell.run("INSERT INTO tags (resource_id, tag) VALUES ('child-2', 'blue')")
        cell.run("INSERT INTO instance_extra (instance_uuid, flavor) VALUES ('child-3', '{}')")
        api.run("INSERT INTO request_specs (instance_uuid, spec) VALUES ('child-4', '{}')")
        api.run("INSERT INTO instance_mappings (instance_uuid, cell_id) VALUES ('child-5', 1)")
        api.run("INSERT INTO flavors (name, memory_mb, vcpus, flavorid) "
                "VALUES ('m1.child', 512, 1, 'child-flavor')")
        api.run("INSERT INTO flavor_extra_specs (flavor_id, `key`, value) SELECT id, "
                "'hw:cpu_policy', 'dedicated' FROM flavors WHERE flavorid = 'child-flavor'")
        wait_head(change_log, 8)
        assert events(change_log) == [
            ("server", "child-1"), ("server", "child-1"), ("server", "child-2"),
            ("server", "child-3"), ("server", "child-4"), ("server", "child-5"),
            ("flavor", "child-flavor"), ("flavor", "child-flavor")]


def test_instance_action_and_key_pair_rows_give_their_keys(source, cell, api):
    """An action row gives its key, an event its action's (looked up by action_id); a
    key pair row (API database) its user and name."""
    kinds = ("flavor", "instance_action", "keypair", "server")
    with tailing(dataclasses.replace(source, kinds=kinds)) as (_tailer, change_log):
        cell.run("INSERT INTO instance_actions (id, action, instance_uuid, request_id) "
                 "VALUES (41, 'create', 'act-1', 'req-1')")
        cell.run("INSERT INTO instance_actions_events (event, action_id, result) "
                 "VALUES ('compute_build', 41, 'Success')")
        api.run("INSERT INTO key_pairs (name, user_id, fingerprint, public_key) "
                "VALUES ('k 1', 'u-1', 'f', 'ssh-rsa AAAA')")
        api.run("DELETE FROM key_pairs WHERE user_id = 'u-1'")
        wait_head(change_log, 4)
        action = feed.instance_action_key("act-1", 41)
        assert events(change_log) == [("instance_action", action), ("instance_action", action),
                                      ("keypair", "u-1/k 1"), ("keypair", "u-1/k 1")]


def test_a_compute_service_change_changes_every_live_instance_on_its_host(source, cell):
    with cell.transaction():
        for number in range(3):
            cell.run("INSERT INTO instances (uuid, host) VALUES (%s, 'svc-host')",
                     (f"svc-{number}",))
        cell.run("INSERT INTO instances (uuid, host, deleted) VALUES ('svc-gone', 'svc-host', 9)")
        cell.run("INSERT INTO instances (uuid, host) VALUES ('svc-other', 'svc-elsewhere')")
        cell.run("INSERT INTO services (host, `binary`, topic, updated_at, disabled, "
                 "forced_down) VALUES ('svc-host', 'nova-compute', 'compute', "
                 "UTC_TIMESTAMP(), 0, 0)")
        cell.run("INSERT INTO services (host, `binary`, topic, updated_at, disabled, "
                 "forced_down) VALUES ('svc-host', 'nova-conductor', 'conductor', "
                 "UTC_TIMESTAMP(), 0, 0)")
    live = [("server", f"svc-{number}") for number in range(3)]
    with tailing(source) as (_tailer, change_log):
        # Disabled: host_status changes for the host's live instances.
        cell.run("UPDATE services SET disabled = 1 WHERE host = 'svc-host' "
                 "AND `binary` = 'nova-compute'")
        # A heartbeat within service_down_time changes nothing.
        cell.run("UPDATE services SET updated_at = updated_at + INTERVAL 10 SECOND, "
                 "report_count = report_count + 1 WHERE host = 'svc-host'")
        # A report after more than service_down_time: the service came back up.
        cell.run("UPDATE services SET updated_at = updated_at + INTERVAL 5 MINUTE "
                 "WHERE host = 'svc-host' AND `binary` = 'nova-compute'")
        # Another binary on the host changes nothing.
        cell.run("UPDATE services SET disabled = 1 WHERE `binary` = 'nova-conductor'")
        cell.run("INSERT INTO instances (uuid, host) VALUES ('svc-marker', 'nowhere')")
        wait_head(change_log, 7)
        assert events(change_log) == live + live + [("server", "svc-marker")]
    cell.run("DELETE FROM services WHERE host = 'svc-host'")


def test_a_compute_service_that_stops_reporting_changes_its_servers(source, cell):
    down_time = 60
    with cell.transaction():
        for host in ("quiet-a", "quiet-b"):
            cell.run("INSERT INTO instances (uuid, host) VALUES (%s, %s)", (f"{host}-vm", host))
        # Reported 57 s ago: up now, down in about 3 s.
        cell.run("INSERT INTO services (host, `binary`, topic, updated_at, disabled, "
                 "forced_down) VALUES ('quiet-a', 'nova-compute', 'compute', "
                 "UTC_TIMESTAMP() - INTERVAL 57 SECOND, 0, 0)")
    with tailing(source, service_down_time=down_time) as (tailer, change_log):
        cell.run("INSERT INTO services (host, `binary`, topic, updated_at, disabled, "
                 "forced_down) VALUES ('quiet-b', 'nova-compute', 'compute', "
                 "UTC_TIMESTAMP() - INTERVAL 57 SECOND, 0, 0)")
        wait_head(change_log, 1)
        assert events(change_log) == [("server", "quiet-b-vm")]      # a new service
        # No write at all: both go down with the clock.
        wait_head(change_log, 3, timeout=15)
        assert sorted(events(change_log, 1)) == [("server", "quiet-a-vm"),
                                                 ("server", "quiet-b-vm")]
        assert [gtid for *_rest, gtid in journal_rows(change_log)[1:]] == [None, None]
        assert tailer.stats.services_down == 2
        # A report again: up, after more than service_down_time.
        cell.run("UPDATE services SET updated_at = UTC_TIMESTAMP() WHERE host = 'quiet-a'")
        wait_head(change_log, 4)
        assert events(change_log, 3) == [("server", "quiet-a-vm")]
        assert change_log.state().position == source_position(source)
    cell.run("DELETE FROM services WHERE host IN ('quiet-a', 'quiet-b')")


def source_position(source) -> str:
    conn = mysql.connect(source.cell_url, select_database=False)
    try:
        return mysql.server_facts(conn).gtid_binlog_pos
    finally:
        conn.close()


def test_a_10000_row_transaction_is_one_journal_transaction(source, cell):
    rows = [(f"big-{number:05d}", "big-host") for number in range(10_000)]
    with tailing(source) as (_tailer, change_log):
        heads = set()
        watching = threading.Event()
        watching.set()

        def watch():       # every head a reader of the journal ever sees
            reader = journal.JournalChangeLog(source.journal_path)
            try:
                while watching.is_set():
                    heads.add(reader.head())
            finally:
                reader.close()

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            with cell.transaction():
                with cell.conn.cursor() as cursor:
                    cursor.executemany("INSERT INTO instances (uuid, host) VALUES (%s, %s)", rows)
            cell.run("INSERT INTO instances (uuid, host) VALUES ('big-after', 'x')")
            wait_head(change_log, 10_001, timeout=120)
        finally:
            watching.clear()
            watcher.join()
        recorded = journal_rows(change_log)
        assert [seq for seq, *_ in recorded] == list(range(1, 10_002))
        assert [key for _seq, _kind, key, _gtid in recorded] == [u for u, _ in rows] + ["big-after"]
        assert len({gtid for *_rest, gtid in recorded[:10_000]}) == 1
        assert 0 in heads and heads <= {0, 10_000, 10_001}, sorted(heads)[:10]


def test_transactions_that_arrive_together_are_journaled_whole_in_groups(nova, source, cell):
    """A backlog read at once: fewer journal commits than source transactions, each
    source transaction's keys with its own GTID exactly as one by one, the position
    after the last one, and a restart that verifies the last one keeps the epoch."""
    with tailing(source) as (_tailer, change_log):
        cell.run("INSERT INTO instances (uuid, host) VALUES ('group-0', 'h')")
        wait_head(change_log, 1)
        epoch = change_log.epoch()
    for number in range(1, 301):          # while no tailer runs: a backlog
        if number % 100 == 0:             # a multi-row transaction among them
            with cell.transaction():
                cell.run("INSERT INTO instances (uuid, host) VALUES (%s, 'h')",
                         (f"group-{number}",))
                cell.run("INSERT INTO instance_metadata (instance_uuid, `key`) VALUES "
                         "(%s, 'k'), ('group-1', 'k')", (f"group-{number}",))
        else:
            cell.run("INSERT INTO instances (uuid, host) VALUES (%s, 'h')", (f"group-{number}",))
    with tailing(source) as (tailer, change_log):
        wait_head(change_log, 304)
        assert tailer.stats.transactions == 300 and tailer.stats.groups < 100, tailer.stats
        rows = journal_rows(change_log)
        assert [seq for seq, *_ in rows] == list(range(1, 305))
        by_gtid: dict[str, list[str]] = {}
        for _seq, _kind, key, gtid in rows[1:]:
            by_gtid.setdefault(gtid, []).append(key)
        assert len(by_gtid) == 300
        assert sorted(keys for keys in by_gtid.values() if len(keys) > 1) == \
            [[f"group-{n}", "group-1"] for n in (100, 200, 300)]
        server_position = nova.scalar("SELECT @@gtid_binlog_pos")
        assert change_log.state().position == server_position
        assert change_log.state().verify_position == binlog.format_position(
            {d: (s, n - 1) for d, (s, n) in binlog.parse_position(server_position).items()})
    with tailing(source) as (tailer, change_log):
        assert change_log.epoch() == epoch and tailer.stats.new_epochs == 0
        cell.run("INSERT INTO instances (uuid, host) VALUES ('group-last', 'h')")
        wait_head(change_log, 305)
        assert events(change_log, 304) == [("server", "group-last")]


def test_a_restart_after_a_large_last_transaction_keeps_the_epoch(source, cell):
    rows = [("large-last", f"k{number}") for number in range(10_000)]
    with tailing(source) as (_tailer, change_log):
        with cell.transaction():
            with cell.conn.cursor() as cursor:
                cursor.executemany("INSERT INTO instance_metadata (instance_uuid, `key`) "
                                   "VALUES (%s, %s)", rows)
        wait_head(change_log, 1, timeout=120)
        epoch = change_log.epoch()
    # The check of the journal's last transaction re-reads all of it.
    with tailing(source) as (tailer, change_log):
        assert change_log.epoch() == epoch and tailer.stats.new_epochs == 0
        assert events(change_log) == [("server", "large-last")]


def test_a_rolled_back_transaction_never_appears(source, cell):
    with tailing(source) as (_tailer, change_log):
        cell.conn.begin()
        cell.run("INSERT INTO instances (uuid, host) VALUES ('rolled-back', 'h')")
        cell.run("INSERT INTO instance_metadata (instance_uuid, `key`) VALUES ('rolled-back', 'k')")
        cell.conn.rollback()
        cell.run("INSERT INTO instances (uuid, host) VALUES ('after-rollback', 'h')")
        wait_head(change_log, 1)
        assert events(change_log) == [("server", "after-rollback")]


def test_ddl_mid_stream_does_not_stop_it(source, cell):
    with tailing(source) as (tailer, change_log):
        cell.run("INSERT INTO instances (uuid, host) VALUES ('ddl-1', 'h')")
        wait_head(change_log, 1)
        # As a newer Nova migration would: a column added before the key column's
        # position changes, then one in front of it.
        cell.run("ALTER TABLE instances ADD COLUMN ddl_added VARCHAR(255) NULL")
        cell.run("ALTER TABLE instances ADD COLUMN ddl_first INT NULL FIRST")
        cell.run("INSERT INTO instances (uuid, host, ddl_added, ddl_first) "
                 "VALUES ('ddl-2', 'h', 'x', 7)")
        cell.run("UPDATE instances SET ddl_added = 'y' WHERE uuid = 'ddl-1'")
        # Same column count, the key column moved: the table is read by its new map.
        cell.run("ALTER TABLE instances MODIFY COLUMN host VARCHAR(255) FIRST")
        cell.run("UPDATE instances SET vm_state = 'moved' WHERE uuid = 'ddl-2'")
        cell.run("ALTER TABLE instances DROP COLUMN ddl_added, DROP COLUMN ddl_first")
        cell.run("INSERT INTO instances (uuid, host) VALUES ('ddl-3', 'h')")
        wait_head(change_log, 5)
        assert events(change_log) == [("server", "ddl-1"), ("server", "ddl-2"),
                                      ("server", "ddl-1"), ("server", "ddl-2"),
                                      ("server", "ddl-3")]
        assert tailer.stats.reconnects == 0 and tailer.stats.new_epochs == 0
    cell.run("ALTER TABLE instances MODIFY COLUMN host VARCHAR(255) AFTER uuid")


def test_stop_and_restart_resume_without_loss_or_duplicate(source, cell):
    with tailing(source) as (_tailer, change_log):
        cell.run("INSERT INTO instances (uuid, host) VALUES ('restart-1', 'h')")
        wait_head(change_log, 1)
        epoch = change_log.epoch()
    for number in (2, 3, 4):          # while no tailer runs
        cell.run("INSERT INTO instances (uuid, host) VALUES (%s, 'h')", (f"restart-{number}",))
    with tailing(source) as (tailer, change_log):
        assert change_log.epoch() == epoch and tailer.stats.new_epochs == 0
        cell.run("INSERT INTO instances (uuid, host) VALUES ('restart-5', 'h')")
        wait_head(change_log, 5)
        assert [seq for seq, *_ in journal_rows(change_log)] == [1, 2, 3, 4, 5]
        assert events(change_log) == [("server", f"restart-{n}") for n in range(1, 6)]


def test_the_replica_user_reads_and_cannot_write(nova, source):
    conn = mysql.connect(source.cell_url)
    api_conn = mysql.connect(source.api_url)
    try:
        with pytest.raises(pymysql.err.OperationalError) as denied:
            with conn.cursor() as cursor:
                cursor.execute("INSERT INTO instances (uuid) VALUES ('not-allowed')")
        assert denied.value.args[0] == 1142          # command denied
        facts = mysql.server_facts(conn)
        mysql.check_binlog_settings(facts)
        assert facts.is_mariadb and facts.gtid_binlog_pos == nova.gtid_binlog_pos()
        assert mysql.binary_logs(conn)
        with conn.cursor() as cursor:
            cursor.execute("SHOW MASTER STATUS")
            assert cursor.fetchone()
            # MariaDB 10.11 gives a snapshot's binlog file and offset (no GTID form).
            cursor.execute("SHOW GLOBAL STATUS LIKE 'binlog_snapshot_position'")
            assert int(cursor.fetchone()[1]) > 0
        databases = mysql.SourceDatabases(source.cell_url, source.api_url)
        rows, api_rows = databases.cell_rows, databases.api_rows
        cell = Writer(nova, CELL_DB)
        cell.run("INSERT INTO instances (uuid, host) VALUES ('view-1', 'view-host')")
        with databases.read_view():
            before = rows("SELECT uuid FROM instances WHERE host = ? AND uuid LIKE 'view-%'",
                          ("view-host",))
            cell.run("INSERT INTO instances (uuid, host) VALUES ('view-2', 'view-host')")
            during = rows("SELECT uuid FROM instances WHERE host = ? AND uuid LIKE 'view-%'",
                          ("view-host",))
            assert api_rows("SELECT count(*) FROM flavors WHERE flavorid <> ?", ("",))
            with pytest.raises(pymysql.err.MySQLError):       # READ ONLY transaction
                rows("DELETE FROM instances WHERE uuid = ?", ("view-1",))
        after = rows("SELECT uuid FROM instances WHERE host = ? AND uuid LIKE 'view-%' "
                     "ORDER BY uuid", ("view-host",))
        cell.close()
        databases.close()
        assert before == during == [("view-1",)]
        assert after == [("view-1",), ("view-2",)]
    finally:
        conn.close()
        api_conn.close()


def test_read_views_fixed_at_entry_or_at_the_first_read(nova, source, cell):
    databases = mysql.SourceDatabases(source.cell_url, source.api_url)
    query = "SELECT uuid FROM instances WHERE host = ? ORDER BY uuid"
    try:
        with databases.read_view(at_entry=True):
            cell.run("INSERT INTO instances (uuid, host) VALUES ('entry-1', 'views')")
            assert databases.cell_rows(query, ("views",)) == []
        with databases.read_view():      # as the seam's EntityReader: at the first read
            cell.run("INSERT INTO instances (uuid, host) VALUES ('first-read-1', 'views')")
            seen = databases.cell_rows(query, ("views",))
            cell.run("INSERT INTO instances (uuid, host) VALUES ('first-read-2', 'views')")
            assert databases.cell_rows(query, ("views",)) == seen == [("entry-1",),
                                                                     ("first-read-1",)]
        assert len(databases.cell_rows(query, ("views",))) == 3
    finally:
        databases.close()


def _statements_run(conn) -> int:
    """The statements this session has run (counting the one that asks)."""
    with conn.cursor() as cursor:
        cursor.execute("SHOW SESSION STATUS LIKE 'Questions'")
        return int(cursor.fetchone()[1])


def test_a_read_view_starts_with_its_first_read_and_costs_nothing_where_nothing_is_read(
        nova, source, cell):
    databases = mysql.SourceDatabases(source.cell_url, source.api_url)
    query = "SELECT uuid FROM instances WHERE host = ? ORDER BY uuid"
    try:
        api_conn = databases.api_conn
        with databases.read_view():
            pass
        idle = -_statements_run(api_conn) + _statements_run(api_conn)
        first = _statements_run(api_conn)
        with databases.read_view():                     # the API database is not read
            cell.run("INSERT INTO instances (uuid, host) VALUES ('deferred-1', 'deferred')")
            seen = databases.cell_rows.many([(query, ("deferred",)), (query, ("none",))])
            cell.run("INSERT INTO instances (uuid, host) VALUES ('deferred-2', 'deferred')")
            assert databases.cell_rows(query, ("deferred",)) == seen[0] == [("deferred-1",)]
            assert seen[1] == []
        assert _statements_run(api_conn) - first == idle      # no START, no ROLLBACK
        # the view's end was sent without waiting; the next command (any cursor) reads
        # its reply first and gets its own rows
        with databases.cell_conn.cursor() as cursor:
            cursor.execute("SELECT @@in_transaction, 7")
            assert cursor.fetchall() == ((0, 7),)
        databases.cell_conn.ping(reconnect=False)
        with databases.read_view():
            with pytest.raises(pymysql.err.MySQLError):       # READ ONLY from the first
                databases.cell_rows("DELETE FROM instances WHERE uuid = ?", ("deferred-1",))
            assert databases.cell_rows(query, ("deferred",)) == [("deferred-1",),
                                                                 ("deferred-2",)]
        assert len(databases.cell_rows(query, ("deferred",))) == 2
    finally:
        databases.close()


def test_queries_sent_together_on_two_connections_read_as_sent_apart(nova, source, cell):
    """``Rows.many_together``: both queries sent before either reply is read; each
    connection's rows, its read view started with its first read, and a connection
    lost before that read connected again, as ``many`` on each would have them."""
    databases = mysql.SourceDatabases(source.cell_url, source.api_url)
    cell_query = "SELECT uuid FROM instances WHERE host = ? ORDER BY uuid"
    api_query = "SELECT ?, COUNT(*) FROM information_schema.tables WHERE table_schema = ?"
    api_db = source.api_url.database
    try:
        cell.run("INSERT INTO instances (uuid, host) VALUES ('together-1', 'together')")
        apart = (databases.cell_rows.many([(cell_query, ("together",)),
                                           (cell_query, ("none",))]),
                 databases.api_rows.many([(api_query, ("api", api_db))]))
        with databases.read_view():
            # the API connection's session is killed while idle: it is connected again
            killed = databases.api_conn.thread_id()
            cell.run("KILL %s", (killed,))
            together = databases.cell_rows.many_together(
                [(cell_query, ("together",)), (cell_query, ("none",))],
                databases.api_rows, [(api_query, ("api", api_db))])
            assert together == apart and together[0][0] == [("together-1",)]
            assert databases.api_conn.thread_id() != killed
            cell.run("INSERT INTO instances (uuid, host) VALUES ('together-2', 'together')")
            assert databases.cell_rows(cell_query, ("together",)) == [("together-1",)]
        assert len(databases.cell_rows(cell_query, ("together",))) == 2
        with pytest.raises(pymysql.err.MySQLError):    # an error of the statements
            databases.cell_rows.many_together([("SELECT nonesuch FROM instances", ())],
                                              databases.api_rows, [(api_query, ("a", api_db))])
        # both connections are left clean: their next queries get their own rows
        assert databases.api_rows(api_query, ("b", api_db))[0][0] == "b"
        assert len(databases.cell_rows(cell_query, ("together",))) == 2
    finally:
        databases.close()


def test_portable_rows_look_like_sqlite_rows(nova, source, cell):
    cell.run("INSERT INTO instances (uuid, host, created_at, updated_at) "
             "VALUES ('portable-1', 'p\\'s host', '2026-03-04 05:06:07', NULL)")
    databases = mysql.SourceDatabases(source.cell_url, source.api_url)
    try:
        rows = databases.cell_rows
        assert rows.rows is not None
        # ? placeholders, "quoted" identifiers and || as in SQLite; datetimes as
        # Nova's SQLAlchemy writes them into SQLite.
        assert rows('SELECT "uuid", host || \'|\' || ?, created_at, updated_at, deleted '
                    "FROM instances WHERE uuid = ? AND host LIKE 'p%'",
                    ("x", "portable-1")) == [
            ("portable-1", "p's host|x", "2026-03-04 05:06:07.000000", None, 0)]
        assert rows("SELECT s.binary FROM services s WHERE s.host = ?", ("none",)) == []
    finally:
        databases.close()


@pytest.mark.parametrize("how", ["restart", "kill"])
def test_the_tailer_follows_a_server_restart(nova, source, cell, how):
    with tailing(source) as (tailer, change_log):
        cell.run("INSERT INTO instances (uuid, host) VALUES (%s, 'h')", (f"srv-{how}-1",))
        wait_head(change_log, 1)
        cell.close()
        if how == "kill":
            nova.kill()                 # SIGKILL: a crash, recovered at start
            nova.start()
        else:
            nova.restart()
        writer = Writer(nova, CELL_DB)
        writer.run("INSERT INTO instances (uuid, host) VALUES (%s, 'h')", (f"srv-{how}-2",))
        writer.close()
        wait_head(change_log, 2)
        assert events(change_log) == [("server", f"srv-{how}-1"), ("server", f"srv-{how}-2")]
        assert tailer.stats.new_epochs == 0 and tailer.stats.reconnects >= 1
    cell.conn = nova.connect(CELL_DB)


def test_a_group_whose_row_stays_locked_is_journaled_again_once_readable(
        nova, source, cell, monkeypatch):
    """The commit wait's locking read times out (here: another transaction holds the
    changed row): the keys are journaled anyway and kept as unsettled; once the row
    can be read they are journaled again, so an entity built too early is rebuilt."""
    from replica.cell import binlog_keys
    monkeypatch.setattr(binlog_keys, "COMMIT_WAIT_TIMEOUT_S", 1)
    monkeypatch.setattr(binlog, "SETTLE_EVERY_S", 0.1)
    binlog.open_change_log(source).close()            # the journal's position: before the write
    cell.run("INSERT INTO instances (uuid, host) VALUES ('settle-1', 'h1')")
    holder = Writer(nova, CELL_DB)
    try:
        holder.conn.begin()
        holder.run("SELECT id FROM instances WHERE uuid = 'settle-1' FOR UPDATE")
        with tailing(source) as (tailer, change_log):
            wait_head(change_log, 1)
            assert events(change_log) == [("server", "settle-1")]
            assert [keys for _probe, keys in tailer.unsettled] == [[("server", "settle-1")]]
            holder.conn.rollback()                     # the row can be read now
            wait_head(change_log, 2)
            assert events(change_log) == [("server", "settle-1"), ("server", "settle-1")]
            assert tailer.unsettled == []
    finally:
        holder.close()
