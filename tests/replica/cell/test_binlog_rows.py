"""Reading some columns of row events (``binlog_rows.column_images``) against the
full decoding of python-mysql-replication, on a real MariaDB's binlog: a table with
a column of every type a Nova table may have, NULLs among them, inserted, updated
and deleted; each event is read twice from two streams over the same binlog."""

from __future__ import annotations

from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import HeartbeatLogEvent, XidEvent
from pymysqlreplication.row_event import UpdateRowsEvent, WriteRowsEvent

from replica.cell import binlog
from replica.cell.binlog_rows import column_images
from replica.cell.binlog_keys import ROW_EVENTS

from tests.realnova.mariadb import mariadb_fixture

mariadb = mariadb_fixture(scope="module")

DB = "rows_check"
TABLE = """CREATE TABLE every_type (
    id INT AUTO_INCREMENT PRIMARY KEY, t TINYINT, tu TINYINT UNSIGNED, s SMALLINT,
    m MEDIUMINT, mu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED, b BIGINT, bu BIGINT UNSIGNED,
    f FLOAT, d DOUBLE, dec1 DECIMAL(10, 2), dec2 DECIMAL(30, 10), dt DATE, tm TIME(3),
    dtm DATETIME, dtm6 DATETIME(6), ts TIMESTAMP(3) NULL, y YEAR, c CHAR(10),
    vs VARCHAR(36), vl VARCHAR(300), txt TEXT, mtxt MEDIUMTEXT, blb MEDIUMBLOB,
    e ENUM('a', 'b'), st SET('x', 'y'), bt BIT(10), js JSON, bin BINARY(4),
    vb VARBINARY(500), uuid VARCHAR(36) NOT NULL, after_all VARCHAR(20))
    CHARACTER SET utf8mb4"""
ROW = ("INSERT INTO every_type (t, tu, s, m, mu, i, iu, b, bu, f, d, dec1, dec2, dt, tm, "
       "dtm, dtm6, ts, y, c, vs, vl, txt, mtxt, blb, e, st, bt, js, bin, vb, uuid, after_all) "
       "VALUES (-5, 250, -300, -70000, 16000000, -2000000000, 4000000000, -9000000000000, "
       "18000000000000000000, 1.5, 2.25, 12345678.91, -12345678901234567890.0123456789, "
       "'2026-12-05', '12:34:56.789', '2026-12-05 10:00:00', '2026-12-05 10:00:00.123456', "
       "'2026-12-05 10:00:00.5', 2026, 'chär', %s, REPEAT('é', 290), REPEAT('x', 1000), "
       "REPEAT('y', 70000), REPEAT(0xff, 300), 'b', 'x,y', b'1010101010', '{\"k\": [1, 2]}', "
       "'abcd', REPEAT(0x00, 400), %s, 'ünïcode ✓')")
NUMERIC = ("id", "t", "tu", "s", "m", "mu", "i", "iu", "b", "bu")
STRINGS = ("c", "vs", "vl", "uuid", "after_all")


def _stream(settings: dict, start: str, server_id: int = 4242) -> BinLogStreamReader:
    """One dump connection per server id (the server drops an older one)."""
    return BinLogStreamReader(connection_settings=settings, server_id=server_id,
                              is_mariadb=True, auto_position=start, blocking=True,
                              only_schemas=[DB], slave_heartbeat=0.2,
                              only_events=list(ROW_EVENTS) + [XidEvent, HeartbeatLogEvent],
                              freeze_schema=True, pymysql_wrapper=binlog._connect_once())


def _until_caught_up(stream: BinLogStreamReader):
    """The stream's events until its first heartbeat (the server has sent everything)."""
    for event in stream:
        if isinstance(event, HeartbeatLogEvent):
            return
        yield event


def test_some_columns_read_as_the_full_decoding_reads_them(mariadb):
    mariadb.create_database(DB)
    mariadb.execute(TABLE, db=DB)
    start = mariadb.scalar("SELECT @@gtid_binlog_pos")
    mariadb.execute(ROW, ("vs-1", "uuid-1"), db=DB)
    mariadb.execute(ROW, ("vs-2", "uuid-2"), db=DB)
    mariadb.execute("INSERT INTO every_type (uuid) VALUES ('all-null')", db=DB)
    mariadb.execute("UPDATE every_type SET vs = CONCAT(vs, '-moved'), i = i + 1, txt = NULL",
                    db=DB)
    mariadb.execute("DELETE FROM every_type WHERE uuid <> 'uuid-2'", db=DB)
    settings = {"host": mariadb.host, "port": mariadb.port, "user": "root", "passwd": ""}
    wanted = set(NUMERIC + STRINGS)
    full, some = _stream(settings, start, 4242), _stream(settings, start, 4243)
    compared = 0
    try:
        for whole, part in zip(_until_caught_up(full), _until_caught_up(some)):
            assert type(whole) is type(part)
            if isinstance(whole, XidEvent):
                continue
            images = column_images(part, wanted)
            assert images is not None, f"{type(part).__name__} not read"
            expected = []
            for row in whole.rows:
                if isinstance(whole, UpdateRowsEvent):
                    before, after = row["before_values"], row["after_values"]
                elif isinstance(whole, WriteRowsEvent):
                    before, after = None, row["values"]
                else:
                    before, after = row["values"], None
                expected.append(tuple(None if image is None else
                                      {name: image[name] for name in wanted}
                                      for image in (before, after)))
            assert len(images) == len(expected)
            differing = [(number, side, name, got[name] if got else got, want[name])
                         for number, (row, wanted_row) in enumerate(zip(images, expected))
                         for side, got, want in zip(("before", "after"), row, wanted_row)
                         if want is not None for name in sorted(want)
                         if got is None or got.get(name, "absent") != want[name]]
            assert not differing, [repr(d)[:120] for d in differing]
            assert [tuple(image is None for image in row) for row in images] == \
                [tuple(image is None for image in row) for row in expected]
            compared += len(images)
    finally:
        full.close()
        some.close()
    assert compared == 3 + 2 + 2        # inserts, updates (the NULL row stays), deletes


def test_a_column_it_cannot_read_leaves_the_event_to_the_full_decoding(mariadb):
    mariadb.create_database(DB)
    mariadb.execute("CREATE TABLE IF NOT EXISTS keyed_by_date (d DATE PRIMARY KEY, v INT)",
                    db=DB)
    start = mariadb.scalar("SELECT @@gtid_binlog_pos")
    mariadb.execute("INSERT INTO keyed_by_date VALUES ('2026-12-05', 1)", db=DB)
    settings = {"host": mariadb.host, "port": mariadb.port, "user": "root", "passwd": ""}
    stream = _stream(settings, start)
    try:
        event = next(e for e in _until_caught_up(stream) if isinstance(e, ROW_EVENTS))
        assert column_images(event, {"d"}) is None        # a DATE is stepped over, not read
        assert column_images(event, {"v", "missing"}) is None
        assert [row["values"]["v"] for row in event.rows] == [1]   # bytes left unread
    finally:
        stream.close()


def test_a_table_changed_between_events_is_read_with_its_new_columns(mariadb):
    """The way to read a table's images is kept per column list of the stream's table
    map: after ALTER TABLE (a new table map) the new layout is read, not the old
    plan's, though the images name the same columns present."""
    mariadb.create_database(DB)
    mariadb.execute("CREATE TABLE IF NOT EXISTS altered (id INT AUTO_INCREMENT PRIMARY KEY, "
                    "a VARCHAR(20), uuid VARCHAR(36))", db=DB)
    start = mariadb.scalar("SELECT @@gtid_binlog_pos")
    mariadb.execute("INSERT INTO altered (a, uuid) VALUES ('x', 'before-alter')", db=DB)
    mariadb.execute("INSERT INTO altered (a, uuid) VALUES (NULL, 'with-null')", db=DB)
    # the same number of columns (the same present bitmaps), another layout: ``a``'s
    # length now takes two bytes
    mariadb.execute("ALTER TABLE altered MODIFY a VARCHAR(300)", db=DB)
    mariadb.execute("INSERT INTO altered (a, uuid) VALUES (REPEAT('w', 280), 'after-alter')",
                    db=DB)
    mariadb.execute("UPDATE altered SET a = 'z' WHERE uuid = 'after-alter'", db=DB)
    settings = {"host": mariadb.host, "port": mariadb.port, "user": "root", "passwd": ""}
    stream = _stream(settings, start)
    try:
        got = []
        for event in _until_caught_up(stream):
            if isinstance(event, ROW_EVENTS) and event.table == "altered":
                images = column_images(event, {"id", "uuid"})
                assert images is not None
                got += [(None if image is None else image["uuid"]) for row in images
                        for image in row]
    finally:
        stream.close()
    assert got == [None, "before-alter", None, "with-null", None, "after-alter",
                   "after-alter", "after-alter"]
