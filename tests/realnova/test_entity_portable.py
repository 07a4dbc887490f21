"""The entity builder's SQL is portable: the same queries (``?`` made ``%s``) build valid
server and flavor entities from the databases Nova itself made and wrote on MariaDB,
through a ``rows(sql, params)`` function over PyMySQL."""

from __future__ import annotations

import contextlib
import time

import pymysql
import pytest

from replica import feed
from replica.cell import entity

from tests.realnova.mariadb import mariadb_fixture
from tests.realnova.novadb import nova_mariadb_fixture

mariadb = mariadb_fixture(scope="module")
nova = nova_mariadb_fixture(scope="module", prefix="portable_")


class MySQLRows:
    """``rows(sql, params)`` over one PyMySQL connection, ``?`` placeholders as ``%s``."""

    def __init__(self, conn):
        self.conn = conn

    def rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        assert "%" not in sql            # the translation below would need escaping
        with self.conn.cursor() as cursor:
            cursor.execute(sql.replace("?", "%s"), tuple(params) or None)
            return list(cursor.fetchall())

    def has_column(self, table: str, column: str) -> bool:
        return bool(self.rows("SELECT 1 FROM information_schema.columns WHERE "
                              "table_schema = DATABASE() AND table_name = ? AND "
                              "column_name = ?", (table, column)))


class Written(list):
    group = None
    requested = None


@pytest.fixture(scope="module")
def written(nova):
    written = Written()
    with nova.writer() as writer:
        writer.create_flavor(name="m1.small", vcpus=1, memory_mb=2048, root_gb=20,
                             flavorid="2", extra_specs={"hw:cpu_policy": "shared"},
                             is_public=False, projects=["p1"])
        writer.create_compute(host="compute-1", az="zone-1")
        group = writer.create_server_group(user_id="u1", project_id="p1", name="g")
        servers = [writer.build_server(user_id="u1", project_id="p1", flavor="2",
                                       name=f"vm-{i}", metadata={"k": str(i)},
                                       tags=["t1"], server_group=group["uuid"], az="zone-1",
                                       scheduler_hints={"team": "a"})["uuid"]
                   for i in range(3)]
        written.group = group["uuid"]
        written.requested = writer.build_server(
            user_id="u1", project_id="p1", flavor="2", name="queued", metadata={"q": "1"},
            tags=["t2"], server_group=group["uuid"], scheduler_hints={"team": "q"},
            stage="requested")["uuid"]
        writer.fault(uuid=servers[0])
        writer.delete(uuid=servers[2])
    written.extend(servers)
    return written


def connect(nova, which: str, portable: bool = False):
    """``portable``: in the SQL mode and with the conversions the publisher's entity
    reads use (replica.cell.mysql.connect)."""
    names = dict(zip(("api", "cell0", "cell1"), nova.database_names))
    if portable:
        from replica.cell import mysql
        return MySQLRows(nova.mariadb.connect(names[which], conv=mysql.PORTABLE_CONVERSIONS,
                                              init_command=mysql.PORTABLE_SQL_MODE))
    return MySQLRows(nova.mariadb.connect(names[which]))


def test_server_entities_from_nova_on_mariadb(nova, written):
    db = connect(nova, "cell1")
    try:
        children = entity.children_available(db.has_column)
        assert "metadata" in children and "specs" not in children   # specs: API database
        db.rows("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        built = entity.build_servers(db, list(written) + ["00000000-0000-4000-8000-000000000000"],
                                     children)
        assert built["00000000-0000-4000-8000-000000000000"] is None
        live, faulted, deleted = built[written[1]], built[written[0]], built[written[2]]
        for uuid in written:
            feed.validate_entity(feed.KIND_SERVER, uuid, built[uuid])
        assert (live["display_name"], live["metadata"], live["tags"]) == ("vm-1", {"k": "1"},
                                                                         ["t1"])
        assert (live["flavor"]["flavorid"], live["flavor"]["memory_mb"]) == ("2", 2048)
        assert live["host_status"] == "UP" and live["created_at"].endswith(".000000")
        assert faulted["fault"]["code"] == 500 and faulted["vm_state"] == "error"
        assert deleted["deleted"] is True and deleted["tags"] == []
        items, cursor = entity.page_entities(db, [feed.KIND_SERVER], None, 2, children)
        assert cursor is not None and [key for _k, key, _e in items] == sorted(written)[:2]
        assert entity.count_entities(db, [feed.KIND_SERVER]) == 3
        paged = {key: e for _k, key, e in entity.iter_entities(db, [feed.KIND_SERVER], 2,
                                                               children)}
        assert paged == {uuid: built[uuid] for uuid in written}
        db.rows("ROLLBACK")
    finally:
        db.conn.close()


def test_flavor_entities_from_nova_api_database_on_mariadb(nova, written):
    db = connect(nova, "api")
    try:
        # Nova's API database publishes its aggregates, flavors, key pairs, quota limits,
        # server groups and, as servers, its build requests.
        assert entity.kinds_in(name for (name,) in db.rows(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()")
        ) == [feed.KIND_AGGREGATE, feed.KIND_FLAVOR, feed.KIND_KEYPAIR, feed.KIND_QUOTA,
              feed.KIND_SERVER, feed.KIND_SERVER_GROUP]
        built = entity.build_flavors(db, ["2", "404"])
        assert built["404"] is None
        feed.validate_entity(feed.KIND_FLAVOR, "2", built["2"])
        assert (built["2"]["extra_specs"], built["2"]["projects"], built["2"]["is_public"]) == \
            ({"hw:cpu_policy": "shared"}, ["p1"], False)
    finally:
        db.conn.close()


def test_zone_and_server_group_entities_on_mariadb(nova, written):
    """The availability zones' facts (a cell's services, the API database's aggregates)
    and server groups build from Nova's own MariaDB schemas."""
    api, cell = connect(nova, "api", portable=True), connect(nova, "cell1", portable=True)
    try:
        (aggregate,) = [str(i) for (i,) in api.rows("SELECT id FROM aggregates")]
        built = entity.build_aggregates(api, [aggregate])[aggregate]
        feed.validate_entity(feed.KIND_AGGREGATE, aggregate, built)
        assert (built["metadata"]["availability_zone"], built["hosts"]) == (
            "zone-1", ["compute-1"])
        group = entity.build_server_groups(api, [written.group])[written.group]
        feed.validate_entity(feed.KIND_SERVER_GROUP, written.group, group)
        assert (group["name"], group["project_id"], group["policy"]) == (
            "g", "p1", "anti-affinity")
        assert set(written) | {written.requested} <= set(group["members"])
        keys = entity.SOURCE_KINDS[feed.KIND_SERVICE].keys(cell.rows, "", 10)
        services = entity.build_services(cell, keys, entity.Reach(service_down_time=60))
        (compute,) = [s for s in services.values() if s["host"] == "compute-1"]
        feed.validate_entity(feed.KIND_SERVICE, compute["uuid"], compute)
        assert (compute["binary"], compute["topic"], compute["down_after"]) == (
            "nova-compute", "compute", 60)
        assert feed.KIND_SERVICE in entity.kinds_in(name for (name,) in cell.rows(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()"))
    finally:
        api.conn.close()
        cell.conn.close()


def test_server_entities_read_the_api_database_and_judge_liveness_on_mariadb(nova, written):
    """Server groups and request specs from the API database through a second rows function;
    Nova's liveness rule and the re-checks' SQL on Nova's MariaDB schema."""
    from replica.cell.rechecks import LivenessWatch
    cell, api = connect(nova, "cell1"), connect(nova, "api")
    try:
        reach = entity.Reach(entity.children_available(cell.has_column), api=api.rows,
                             api_children=entity.children_available(api.has_column),
                             service_down_time=60)
        assert {"server_groups", "specs"} <= reach.api_children
        live = entity.build_servers(cell, [written[1]], reach)[written[1]]
        assert live["server_groups"] == [written.group]
        assert live["pinned_availability_zone"] == "zone-1"
        assert live["scheduler_hints"] == {"team": ["a"], "group": [written.group]}
        assert live["host_status"] == "UP"          # created just now, never reported
        late = LivenessWatch(cell.rows, 60, clock=lambda: time.time() + 3600)
        assert late.judge() == {"compute-1": "UNKNOWN"}
        watch = LivenessWatch(cell.rows, 60)
        assert watch.changed_servers() == [] and watch.judge() == {"compute-1": "UP"}
        watch.clock = late.clock
        assert set(watch.changed_servers()) == set(written[:2])     # the live ones
    finally:
        cell.conn.close()
        api.conn.close()


def test_child_queries_sent_together_build_the_same_entities(nova, written):
    """The MariaDB source's rows adapter runs a page's child queries in one round trip
    per database (``mysql.Rows.many``): the entities are the ones built statement by
    statement, by keys (a batch) and by key range (a snapshot page)."""
    from replica.cell import mysql

    names = dict(zip(("api", "cell0", "cell1"), nova.database_names))
    url = mysql.MySQLURL(user="root", password="", host=nova.mariadb.host,
                         port=nova.mariadb.port, database=names["cell1"])
    dbs = mysql.SourceDatabases(url, url.with_database(names["api"]))
    try:
        def one_by_one(rows):
            return lambda sql, params=(): rows(sql, params)       # no ``many``

        def reach(api):
            return entity.Reach(_children(dbs.cell_rows, names["cell1"]), api=api,
                                api_children=_children(dbs.api_rows, names["api"]),
                                service_down_time=60, clock=lambda: 1e9)

        together, apart = reach(dbs.api_rows), reach(one_by_one(dbs.api_rows))
        keys = list(written) + ["00000000-0000-4000-8000-000000000000"]
        with dbs.read_view():
            sent = []
            counting = _Counting(dbs.cell_rows, sent)
            built = entity.build_servers(counting, keys, together)
            assert sent == ["many"]          # the instances and every child at once
            assert built == entity.build_servers(one_by_one(dbs.cell_rows), keys, apart)
            assert built[written[1]]["server_groups"] == [written.group]
            paged = entity.page_entities(dbs.cell_rows, ["server"], None, 100, together)
            assert paged == entity.page_entities(one_by_one(dbs.cell_rows), ["server"], None,
                                                 100, apart)
            assert {key for _kind, key, _ent in paged[0]} >= set(written)
    finally:
        dbs.close()


def _children(rows, database: str) -> frozenset:
    return entity.children_available(lambda table, column: bool(rows(
        "SELECT 1 FROM information_schema.columns WHERE table_schema = ? AND table_name = ? "
        "AND column_name = ?", (database, table, column))))


class _Counting:
    """A rows adapter that notes which of its calls each round trip was."""

    def __init__(self, rows, sent: list):
        self.inner, self.sent = rows, sent

    def __call__(self, sql, params=()):
        self.sent.append("rows")
        return self.inner(sql, params)

    def many(self, statements):
        self.sent.append("many")
        return self.inner.many(statements)


def test_build_request_entities_from_nova_api_database_on_mariadb(nova, written):
    """A server still a build request, from Nova's API database alone: the serialized
    Instance, its tags, server group and request spec; a server in a cell is not one."""
    db = connect(nova, "api")
    reach = entity.Reach(frozenset(), build_requests=True)
    try:
        assert entity.count_entities(db, [feed.KIND_SERVER], reach) == 1
        built = entity.build(db, feed.KIND_SERVER, [written.requested, written[0]], reach)
        assert built[written[0]] is None
        server = built[written.requested]
        feed.validate_entity(feed.KIND_SERVER, written.requested, server)
        assert (server["display_name"], server["vm_state"], server["host"],
                server["instance_name"], server["metadata"], server["tags"],
                server["server_groups"], server["scheduler_hints"],
                server["flavor"]["flavorid"]) == (
            "queued", "building", None, "", {"q": "1"}, ["t2"], [written.group],
            {"team": ["q"], "group": [written.group]}, "2")     # as RequestSpec keeps them
        items, _after = entity.page_entities(db, [feed.KIND_SERVER], None, 10, reach)
        assert [key for _kind, key, _e in items] == [written.requested]
    finally:
        db.conn.close()


def test_hypervisor_entities_from_nova_on_mariadb(nova, written):
    """The compute node Nova's objects wrote, with its service, as a hypervisor entity;
    its cell publishes hypervisors (the API database does not)."""
    db = connect(nova, "cell1")
    try:
        assert feed.KIND_HYPERVISOR in entity.kinds_in(name for (name,) in db.rows(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()"))
        (node_id, uuid, service_id), = db.rows(
            "SELECT cn.id, cn.uuid, sv.id FROM compute_nodes cn JOIN services sv "
            "ON sv.host = cn.host AND sv.binary = 'nova-compute' WHERE cn.host = 'compute-1'")
        built = entity.build_hypervisors(db, [uuid, "00000000-0000-4000-8000-000000000000"])
        assert built["00000000-0000-4000-8000-000000000000"] is None
        node = built[uuid]
        feed.validate_entity(feed.KIND_HYPERVISOR, uuid, node)
        assert (node["id"], node["host"], node["hypervisor_hostname"], node["service_id"],
                node["state"], node["service_disabled"]) == (
            node_id, "compute-1", "compute-1", service_id, "up", False)
        assert (node["vcpus"], node["hypervisor_type"], node["host_ip"]) == (
            16, "QEMU", "192.0.2.10")
        assert entity.count_entities(db, [feed.KIND_HYPERVISOR]) == 1
    finally:
        db.conn.close()


ODD_TEXTS = ["", "plain", "quote \" and \\ backslash", "tab\tnew\nline\x01\x1f", "ünïcødé ✓ 🙂",
             "x" * 250, "y" * 251, "z" * 252, "w" * 65_535, "v" * 70_000, None]


@pytest.fixture(scope="module")
def odd_table(mariadb):
    """A table whose columns cover what the rows reader must give back as PyMySQL's own
    reader does: every length encoding, NULLs, escapes, unicode, integers at their
    limits, date-times (zero ones too), binary, decimal and float."""
    mariadb.create_database("portable_odd")
    mariadb.execute("SET SESSION sql_mode = ''", db="portable_odd")
    mariadb.execute(
        "CREATE TABLE portable_odd.odd (id INT PRIMARY KEY, t MEDIUMTEXT, v VARCHAR(255), "
        "e ENUM('a', 'b'), b TINYINT(1), big BIGINT, ub BIGINT UNSIGNED, at DATETIME, "
        "bin VARBINARY(16), dec_ DECIMAL(10, 3), f DOUBLE)")
    rows = []
    for i, text in enumerate(ODD_TEXTS):
        rows.append((i, text, (text or "")[:255] or None, "ab"[i % 2] if i % 3 else None,
                     i % 2, -2 ** 63 + i if i % 2 else 2 ** 63 - 1 - i, 2 ** 64 - 1 - i,
                     None if i % 4 == 0 else ("0000-00-00 00:00:00" if i % 4 == 1
                                              else f"2026-12-0{i % 9 + 1} 10:11:12"),
                     bytes([i, 0, 255]), "12.345", 0.1 * i))
    with contextlib.closing(mariadb.connect("portable_odd")) as conn, conn.cursor() as cur:
        cur.execute("SET SESSION sql_mode = ''")
        cur.executemany("INSERT INTO odd VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                        rows)
    yield "portable_odd"
    mariadb.drop_database("portable_odd")


def test_rows_reader_gives_pymysqls_values(mariadb, odd_table):
    """The publisher's connections read result rows with their own loop
    (``mysql._RowsResult``): it gives exactly the rows PyMySQL's reader gives, one
    statement or several in one query."""
    from replica.cell import mysql

    url = mysql.MySQLURL(user="root", password="", host=mariadb.host, port=mariadb.port,
                         database=odd_table)
    plain = mariadb.connect(odd_table, conv=mysql.PORTABLE_CONVERSIONS,
                            init_command=mysql.PORTABLE_SQL_MODE)
    ours = mysql.connect(url, portable=True)
    assert isinstance(ours, mysql.ReadViewConnection)
    rows = mysql.Rows(ours)
    try:
        def theirs(sql):
            with plain.cursor() as cur:
                cur.execute(sql)
                return list(cur.fetchall())
        everything = "SELECT * FROM odd ORDER BY id"
        expected = theirs(everything)
        assert len(expected) == len(ODD_TEXTS) and expected[8][1] == "w" * 65_535
        assert {type(value).__name__ for row in expected for value in row} == {
            "int", "str", "bytes", "float", "Decimal", "NoneType"}
        assert rows(everything) == expected
        assert rows.many([(everything, ()), ("SELECT 1, NULL, 'a'", ())]) == [
            expected, theirs("SELECT 1, NULL, 'a'")]
        assert rows("SELECT * FROM odd WHERE id > ? ORDER BY id", (100,)) == []
        # Column definitions are read once per distinct packet: a query sent again,
        # and the same columns under other names, still give PyMySQL's descriptions.
        renamed = "SELECT id AS t, t AS id, at, at AS at2 FROM odd ORDER BY id"
        for sql in (everything, everything, renamed, renamed):
            with plain.cursor() as cur, ours.cursor() as mine:
                cur.execute(sql)
                mine.execute(sql)
                assert mine.description == cur.description
                assert mine.fetchall() == cur.fetchall()
        assert rows(renamed) == theirs(renamed)
        with pytest.raises(pymysql.err.OperationalError, match="no_such_column"):
            rows("SELECT no_such_column FROM odd")
        assert rows("SELECT 1") == [(1,)]      # the connection goes on after an error
    finally:
        plain.close()
        ours.close()
