"""The entity builder's SQL is portable: the same queries (``?`` made ``%s``) build valid
server and flavor entities from the databases Nova itself made and wrote on MariaDB,
through a ``rows(sql, params)`` function over PyMySQL."""

from __future__ import annotations

import time

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
        writer.fault(uuid=servers[0])
        writer.delete(uuid=servers[2])
    written.extend(servers)
    return written


def connect(nova, which: str):
    names = dict(zip(("api", "cell0", "cell1"), nova.database_names))
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
        assert entity.kinds_in(name for (name,) in db.rows(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()")
        ) == [feed.KIND_FLAVOR, feed.KIND_KEYPAIR]
        built = entity.build_flavors(db, ["2", "404"])
        assert built["404"] is None
        feed.validate_entity(feed.KIND_FLAVOR, "2", built["2"])
        assert (built["2"]["extra_specs"], built["2"]["projects"], built["2"]["is_public"]) == \
            ({"hw:cpu_policy": "shared"}, ["p1"], False)
    finally:
        db.conn.close()


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
