"""MySQL GTID sets as the tailer keeps and sends them (no MySQL server here: the format,
the position's arithmetic, and the auto-position request the stream reader makes)."""

from __future__ import annotations

import pytest
from pymysqlreplication.event import GtidEvent, QueryEvent, XidEvent
from pymysqlreplication.gtid import GtidSet

from replica.cell import binlog, gtid_sets, mysql

A = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
B = "4f22ab58-82db-22f2-af44-d91bb0530673"


def test_sets_are_parsed_into_one_canonical_form():
    text = f" {B.upper()}:1-5,\n{A}:105:1-100:101-104:200-210 "   # as @@gtid_executed prints
    assert gtid_sets.parse(text) == {A: [(1, 105), (200, 210)], B: [(1, 5)]}
    assert gtid_sets.canonical(text) == f"{A}:1-105:200-210,{B}:1-5"
    assert gtid_sets.canonical("") == "" and gtid_sets.parse(" \n") == {}
    assert gtid_sets.canonical(f"{A}:7") == f"{A}:7"


@pytest.mark.parametrize("text", ["nonsense", f"{A}", f"{A}:0", f"{A}:5-3", f"{A}:1-2-3",
                                  "0-1-42", f"{A[:-1]}:1", f"{A}:x"])
def test_malformed_sets_are_refused(text):
    with pytest.raises(gtid_sets.GtidSetError):
        gtid_sets.parse(text)


def test_advancing_by_one_transaction():
    assert gtid_sets.add("", f"{A}:1") == f"{A}:1"
    assert gtid_sets.add(f"{A}:1-100", f"{A}:101") == f"{A}:1-101"
    assert gtid_sets.add(f"{A}:1-100", f"{A}:103") == f"{A}:1-100:103"
    assert gtid_sets.add(f"{A}:1-100:103", f"{A}:101") == f"{A}:1-101:103"
    assert gtid_sets.add(f"{A}:1-100:103", f"{A}:102") == f"{A}:1-100:102-103"
    assert gtid_sets.add(f"{A}:1-101:103", f"{A}:102") == f"{A}:1-103"
    assert gtid_sets.add(f"{B}:1-5", f"{A}:1") == f"{A}:1,{B}:1-5"
    # the tailer's advance() takes MySQL's GTIDs as it takes MariaDB's
    assert binlog.advance(f"{A}:1-100", f"{A}:101") == f"{A}:1-101"
    assert binlog.advance("0-1-41", "0-1-42") == "0-1-42"
    with pytest.raises(gtid_sets.GtidSetError):
        gtid_sets.add(f"{A}:1", "0-1-42x")


def test_a_server_behind_the_journal():
    assert gtid_sets.contains(f"{A}:1-100,{B}:1-5", f"{A}:1-50:60-70")
    assert not gtid_sets.contains(f"{A}:1-100", f"{A}:1-101")
    assert not gtid_sets.contains(f"{A}:1-100", f"{A}:1-100,{B}:1")
    assert gtid_sets.contains(f"{A}:1-100", "")
    assert not binlog.is_behind(f"{A}:1-100,{B}:1-9", f"{A}:1-100,{B}:1-5")
    assert binlog.is_behind(f"{A}:1-99", f"{A}:1-100")            # restored from a backup
    assert binlog.is_behind(f"{B}:1-500", f"{A}:1-100")           # another server's history
    assert not binlog.is_behind(f"{A}:1-100", "")
    assert binlog.is_behind("0-1-41", "0-1-42") and not binlog.is_behind("0-1-42", "0-1-42")


def test_the_auto_position_request_carries_the_set():
    url = mysql.MySQLURL(user="replica", password="pw", host="127.0.0.1", port=3306,
                         database="nova_cell1")
    position = f"{A}:1-100:103,{B}:1-5"
    arguments = binlog.stream_arguments(url, ["nova_cell1"], position, 77, is_mariadb=False)
    assert arguments["is_mariadb"] is False and arguments["auto_position"] == position
    assert arguments["server_id"] == 77 and "database" not in arguments["connection_settings"]
    assert GtidEvent in binlog.STREAM_EVENTS
    # what the stream reader sends in COM_BINLOG_DUMP_GTID: the library reads our form
    # back to the same set and encodes it (8-byte count, then per uuid its intervals)
    parsed = GtidSet(position)
    assert str(parsed) == position
    encoded = parsed.encoded()
    assert int.from_bytes(encoded[:8], "little") == 2 and len(encoded) == parsed.encoded_length
    mariadb = binlog.stream_arguments(url, ["nova_cell1"], "0-1-42", 77)
    assert mariadb["is_mariadb"] is True and mariadb["auto_position"] == "0-1-42"


def test_the_server_identity_and_position_of_a_mysql_server():
    facts = mysql.ServerFacts(version="8.0.36", is_mariadb=False, server_id=1,
                              server_uuid=A, gtid_binlog_pos="",
                              gtid_executed=f"{B}:1-5,\n{A}:1-100",
                              settings={**mysql.REQUIRED_BINLOG_SETTINGS, "gtid_mode": "OFF"})
    assert facts.identity() == A and not mysql.is_mariadb_identity(facts.identity())
    assert facts.position == f"{A}:1-100,{B}:1-5"
    with pytest.raises(mysql.SourceConfigError, match="gtid_mode"):
        mysql.check_binlog_settings(facts)
    mariadb = mysql.ServerFacts(version="10.11.6-MariaDB", is_mariadb=True, server_id=1,
                                server_uuid=None, gtid_binlog_pos="0-1-42", gtid_executed=None,
                                settings=dict(mysql.REQUIRED_BINLOG_SETTINGS))
    assert mysql.is_mariadb_identity(mariadb.identity()) and mariadb.position == "0-1-42"
    mysql.check_binlog_settings(mariadb)


class _Query(QueryEvent):
    def __init__(self, query: str):
        self.query = query


class _Xid(XidEvent):
    def __init__(self):
        pass


def test_mysql_transaction_ends():
    """MySQL: a DML transaction is BEGIN, rows, XID; DDL is a lone query after its GTID."""
    gtid = object.__new__(GtidEvent)
    assert binlog.ends_transaction(_Xid(), gtid, began=True)
    assert not binlog.ends_transaction(_Query("BEGIN"), gtid, began=False)
    assert binlog.ends_transaction(_Query("ALTER TABLE instances ADD x INT"), gtid, began=False)
    assert not binlog.ends_transaction(_Query("SAVEPOINT a"), gtid, began=True)
    assert binlog.ends_transaction(_Query("COMMIT"), gtid, began=True)
