"""Smoke tests of the real-Nova harness: the MariaDB server, Nova's own tooling writing its
databases, and real nova-api answering from them."""

from __future__ import annotations

import pymysql
import pytest

from tests.realnova.mariadb import mariadb_fixture

mariadb = mariadb_fixture(scope="module")


def test_mariadb_has_row_binlog_with_gtids(mariadb):
    settings = dict(mariadb.execute(
        "SELECT 'log_bin', @@log_bin UNION ALL SELECT 'binlog_format', @@binlog_format "
        "UNION ALL SELECT 'binlog_row_image', @@binlog_row_image "
        "UNION ALL SELECT 'binlog_row_metadata', @@binlog_row_metadata "
        "UNION ALL SELECT 'gtid_strict_mode', @@gtid_strict_mode "
        "UNION ALL SELECT 'server_id', @@server_id"))
    assert settings == {"log_bin": "1", "binlog_format": "ROW", "binlog_row_image": "FULL",
                        "binlog_row_metadata": "FULL", "gtid_strict_mode": "1",
                        "server_id": str(mariadb.server_id)}
    before = mariadb.gtid_binlog_pos()
    mariadb.create_database("harness_gtid")
    after = mariadb.gtid_binlog_pos()
    assert after and after != before
    domain, server_id, seq = after.split("-")
    assert int(server_id) == mariadb.server_id and int(seq) >= 1


def test_replica_user_reads_but_cannot_write(mariadb):
    mariadb.create_database("harness_grants")
    mariadb.execute("CREATE TABLE harness_grants.t (id INT PRIMARY KEY, v TEXT)")
    mariadb.execute("INSERT INTO harness_grants.t VALUES (1, 'one')")
    mariadb.create_replica_user("harness_replica", "pw'with\"quotes", ["harness_grants"])
    conn = mariadb.connect("harness_grants", "harness_replica", "pw'with\"quotes")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT v FROM t WHERE id = %s", (1,))
            assert cur.fetchall() == (("one",),)
            cur.execute("SHOW BINARY LOGS")          # REPLICATION CLIENT
            assert cur.fetchall()
            for statement in ("INSERT INTO t VALUES (2, 'two')", "UPDATE t SET v = 'x'",
                              "DELETE FROM t", "CREATE TABLE u (id INT)",
                              "SELECT * FROM mysql.user"):
                with pytest.raises(pymysql.err.OperationalError) as denied:
                    cur.execute(statement)
                assert denied.value.args[0] in (1142, 1044), (statement, denied.value)
    finally:
        conn.close()
    assert mariadb.execute("SELECT v FROM harness_grants.t") == [("one",)]


def test_mariadb_restart_keeps_data_and_binlog(mariadb):
    mariadb.create_database("harness_restart")
    mariadb.execute("CREATE TABLE harness_restart.t (id INT PRIMARY KEY)")
    mariadb.execute("INSERT INTO harness_restart.t VALUES (7)")
    position = mariadb.gtid_binlog_pos()
    port = mariadb.port
    mariadb.restart()
    assert mariadb.port == port
    assert mariadb.execute("SELECT id FROM harness_restart.t") == [(7,)]
    assert mariadb.gtid_binlog_pos() == position
