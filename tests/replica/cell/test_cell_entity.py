"""Entities built from the normalized tables match what was written, follow Nova's
rules for deleted rows and host_status, and validate against the feed contract."""

from __future__ import annotations

import json
import random

import pytest

from replica import feed
from replica.cell import connection, entity, outbox, rows, simulator, sqlite_source

U1 = "11111111-1111-4111-8111-111111111111"
U2 = "22222222-2222-4222-8222-222222222222"
STAMP = "2026-12-01 07:30:43.123456"


def write_server(conn, uuid: str = U1, iid: int = 42, host: str | None = "h1") -> list[dict]:
    """One server with a row in every table the entity reads, as Nova writes them."""
    medium, tiny = rows.FLAVORS[2], rows.FLAVORS[0]
    network = [rows.vif(random.Random(1), "demo", 0, "172.24.4.9")]
    conn.execute(
        "INSERT INTO instances (id, uuid, created_at, updated_at, deleted, user_id, project_id, "
        "image_ref, hostname, launch_index, key_name, power_state, vm_state, task_state, "
        "memory_mb, vcpus, root_gb, ephemeral_gb, host, node, instance_type_id, reservation_id, "
        "launched_at, availability_zone, display_name, display_description, locked, locked_by, "
        "root_device_name, config_drive, access_ip_v4, auto_disk_config, progress, user_data) "
        "VALUES (?, ?, ?, ?, 0, 'u1', 'demo', 'img-1', 'web-1', 0, 'mykey', 1, 'active', NULL, "
        "4096, 2, 40, 0, ?, ?, 3, 'r-00000001', '2026-12-01 07:31:00', 'nova', 'web-1', 'd', 1, "
        "'admin', '/dev/vda', 'True', '10.1.2.3', 1, 0, 'dXNlcg==')",
        (iid, uuid, STAMP, STAMP, host, host))
    conn.execute("INSERT INTO instance_extra (instance_uuid, deleted, flavor, trusted_certs) "
                 "VALUES (?, 0, ?, ?)",
                 (uuid, rows.extra_flavor(medium, tiny, medium), rows.trusted_certs(["c1", "c2"])))
    conn.execute("INSERT INTO instance_info_caches (instance_uuid, deleted, network_info) "
                 "VALUES (?, 0, ?)", (uuid, json.dumps(network)))
    for key, value in (("image_disk_format", "qcow2"), ("image_min_ram", "512"),
                       ("locked_reason", "audit"), ("owner_user_name", "demo")):
        conn.execute("INSERT INTO instance_system_metadata (instance_uuid, deleted, key, value) "
                     "VALUES (?, 0, ?, ?)", (uuid, key, value))
    conn.execute("INSERT INTO instance_metadata (instance_uuid, deleted, key, value) VALUES "
                 "(?, 0, 'role', 'web'), (?, 5, 'gone', 'x')", (uuid, uuid))
    conn.execute("INSERT INTO tags (resource_id, tag) VALUES (?, 'zeta'), (?, 'alpha')",
                 (uuid, uuid))
    conn.execute("INSERT INTO block_device_mapping (instance_uuid, deleted, volume_id, "
                 "delete_on_termination, boot_index) VALUES (?, 0, 'vol-b', 0, NULL), "
                 "(?, 0, 'vol-a', 1, 0), (?, 0, NULL, 1, 0), (?, 9, 'vol-gone', 0, 1)",
                 (uuid, uuid, uuid, uuid))
    conn.execute("INSERT OR IGNORE INTO security_groups (id, name, deleted) VALUES "
                 "(1, 'web', 0), (2, 'default', 0), (3, 'old', 3)")
    conn.execute("INSERT INTO security_group_instance_association (instance_uuid, "
                 "security_group_id, deleted) VALUES (?, 1, 0), (?, 2, 0), (?, 3, 0)",
                 (uuid, uuid, uuid))
    conn.execute("INSERT INTO instance_faults (instance_uuid, deleted, code, message, details, "
                 "created_at) VALUES (?, 0, 500, 'first', 'tb1', '2026-12-01 07:00:00'), "
                 "(?, 0, 404, 'latest', 'tb2', '2026-12-01 07:10:00')", (uuid, uuid))
    conn.execute("INSERT OR IGNORE INTO services (host, \"binary\", topic, deleted, disabled, "
                 "forced_down) VALUES ('h1', 'nova-compute', 'compute', 0, 0, 0)")
    conn.execute("INSERT OR IGNORE INTO instance_groups (id, uuid, name) VALUES (1, 'grp-1', 'g')")
    conn.execute("INSERT INTO instance_group_member (instance_uuid, group_id) VALUES (?, 1)",
                 (uuid,))
    conn.execute("INSERT INTO request_specs (instance_uuid, spec) VALUES (?, ?)",
                 (uuid, rows.request_spec(uuid, "demo", medium, "img-1", "az-west",
                                          {"group": ["grp-1"]})))
    return network


@pytest.fixture
def conn(cell_db):
    c = connection.open_cell(cell_db)
    yield c
    c.close()


def build_one(conn, uuid=U1):
    built = entity.build_servers(conn, [uuid])[uuid]
    if built is not None:
        feed.validate_entity(feed.KIND_SERVER, uuid, built)
    return built


def test_server_entity_matches_what_was_written(conn):
    network = write_server(conn)
    e = build_one(conn)
    assert set(e) == set(feed.SERVER_FIELDS)
    assert e["flavor"] == {"flavorid": "3", "name": "m1.medium", "memory_mb": 4096, "vcpus": 2,
                           "root_gb": 40, "ephemeral_gb": 0, "swap": 0, "extra_specs": {}}
    assert {k: e[k] for k in ("uuid", "project_id", "user_id", "display_name", "hostname",
                              "vm_state", "task_state", "power_state", "host", "node",
                              "availability_zone", "key_name", "config_drive", "access_ip_v4",
                              "image_ref", "user_data", "root_device_name")} == {
        "uuid": U1, "project_id": "demo", "user_id": "u1", "display_name": "web-1",
        "hostname": "web-1", "vm_state": "active", "task_state": None, "power_state": 1,
        "host": "h1", "node": "h1", "availability_zone": "nova", "key_name": "mykey",
        "config_drive": "True", "access_ip_v4": "10.1.2.3", "image_ref": "img-1",
        "user_data": "dXNlcg==", "root_device_name": "/dev/vda"}
    assert e["created_at"] == "2026-12-01T07:30:43.123456"
    assert e["launched_at"] == "2026-12-01T07:31:00.000000"
    assert e["deleted"] is False and e["deleted_at"] is None
    assert (e["locked"], e["locked_by"], e["locked_reason"]) == (True, "admin", "audit")
    assert e["auto_disk_config"] is True
    assert e["instance_name"] == "instance-0000002a"
    assert e["image_properties"] == {"disk_format": "qcow2", "min_ram": "512"}
    assert e["metadata"] == {"role": "web"}
    assert e["tags"] == ["alpha", "zeta"]
    assert e["network_info"] == network
    assert e["security_groups"] == ["web", "default"]
    assert e["volumes"] == [{"id": "vol-b", "delete_on_termination": False},
                            {"id": "vol-a", "delete_on_termination": True}]
    assert e["fault"] == {"code": 404, "message": "latest", "details": "tb2",
                          "created": "2026-12-01T07:10:00.000000"}
    assert e["host_status"] == "UP"
    assert e["trusted_image_certificates"] == ["c1", "c2"]
    assert e["server_groups"] == ["grp-1"]
    assert e["pinned_availability_zone"] == "az-west"
    assert e["scheduler_hints"] == {"group": ["grp-1"]}


@pytest.mark.parametrize("disabled,forced_down,deleted,expected", [
    (0, 0, 0, "UP"), (1, 0, 0, "MAINTENANCE"), (0, 1, 0, "DOWN"), (1, 1, 0, "DOWN"),
    (0, 0, 1, "UP"),        # only a deleted service row: Nova still finds it
])
def test_host_status_follows_the_compute_service(conn, disabled, forced_down, deleted, expected):
    write_server(conn)
    conn.execute("UPDATE services SET disabled = ?, forced_down = ?, deleted = ?",
                 (disabled, forced_down, deleted))
    assert build_one(conn)["host_status"] == expected


def test_host_status_is_empty_without_host_or_service(conn):
    write_server(conn, U1, 1, host=None)
    write_server(conn, U2, 2, host="h-without-service")
    built = entity.build_servers(conn, [U1, U2])
    assert (built[U1]["host_status"], built[U2]["host_status"]) == ("", "")


def test_a_live_service_row_wins_over_a_deleted_one(conn):
    write_server(conn)
    conn.execute("UPDATE services SET deleted = id, forced_down = 1")
    conn.execute("INSERT INTO services (host, \"binary\", topic, deleted, disabled) "
                 "VALUES ('h1', 'nova-compute', 'compute', 0, 1)")
    assert build_one(conn)["host_status"] == "MAINTENANCE"


def test_a_soft_deleted_server_is_an_entity_as_nova_shows_it(conn):
    network = write_server(conn)
    # Nova's instance_destroy: deleted = id on the instance and its child rows, tags removed
    stamp = "2026-12-01 08:00:00.000001"
    conn.execute("UPDATE instances SET deleted = id, deleted_at = ?, terminated_at = ?, "
                 "vm_state = 'deleted', power_state = 0", (stamp, stamp))
    for table in simulator.SOFT_DELETED_WITH_INSTANCE:
        conn.execute(f"UPDATE {table} SET deleted = id WHERE deleted = 0")
    conn.execute("DELETE FROM tags")
    e = build_one(conn)
    assert (e["deleted"], e["vm_state"], e["deleted_at"]) == (True, "deleted",
                                                              "2026-12-01T08:00:00.000001")
    assert e["flavor"]["flavorid"] == "3"                # extra is still read, as Nova does
    assert e["network_info"] == network                  # so is the info cache
    assert e["image_properties"] == {"disk_format": "qcow2", "min_ram": "512"}
    assert (e["metadata"], e["tags"], e["security_groups"], e["volumes"]) == ({}, [], [], [])
    assert e["fault"] is None and e["host_status"] == ""


def test_a_hard_deleted_server_builds_to_none(conn):
    write_server(conn)
    conn.execute("DELETE FROM instances")
    assert entity.build_servers(conn, [U1, U2]) == {U1: None, U2: None}


def test_a_hidden_server_builds_to_none_and_is_in_no_snapshot_page(conn):
    """The copy a cross-cell resize keeps hidden in the other cell: nova-api lists it
    nowhere and shows the visible copy (its instance mapping names that cell)."""
    write_server(conn, U1, iid=1)
    write_server(conn, U2, iid=2)
    conn.execute("UPDATE instances SET hidden = 1 WHERE uuid = ?", (U2,))
    assert entity.build_servers(conn, [U1, U2])[U2] is None
    assert build_one(conn, U1) is not None
    items, _after = entity.page_entities(conn, ["server"], None, 10)
    assert [key for _kind, key, _e in items] == [U1]
    conn.execute("UPDATE instances SET deleted = 2 WHERE uuid = ?", (U2,))
    assert entity.build_servers(conn, [U2])[U2]["deleted"] is True   # deleted: as before


def test_a_row_mid_build_without_extra_or_cache_still_validates(conn):
    conn.execute("INSERT INTO instances (uuid, deleted, memory_mb, vcpus, root_gb, ephemeral_gb, "
                 "vm_state, task_state, created_at) VALUES (?, 0, 512, 1, 1, 0, 'building', "
                 "'scheduling', ?)", (U1, STAMP))
    conn.execute("INSERT INTO instance_extra (instance_uuid, flavor, trusted_certs) "
                 "VALUES (?, 'not json', '{')", (U1,))
    e = build_one(conn)
    assert e["flavor"]["memory_mb"] == 512 and e["flavor"]["flavorid"] == ""
    assert (e["network_info"], e["trusted_image_certificates"], e["host"]) == ([], None, None)


def test_build_servers_runs_a_fixed_number_of_statements_per_page(conn):
    for i in range(1200):
        conn.execute("INSERT INTO instances (uuid, deleted, created_at) VALUES (?, 0, ?)",
                         (f"00000000-0000-4000-8000-{i:012d}", STAMP))
    statements = []
    conn.exec_trace = lambda _cursor, sql, _bindings: statements.append(sql) or True
    built = entity.build_servers(conn, [f"00000000-0000-4000-8000-{i:012d}" for i in range(1200)])
    conn.exec_trace = None
    assert len(built) == 1200 and all(v is not None for v in built.values())
    pages = -(-1200 // entity.PAGE)
    assert len(statements) <= 13 * pages


def test_every_simulated_server_validates(cell_db, conn):
    simulator.populate(cell_db, 150, 3, seed=5)
    simulator.run_simulator(simulator.SimulatorConfig(cell_db, 0, 150, 3, ops=600, seed=5))
    uuids = [u for (u,) in conn.execute("SELECT uuid FROM instances")]
    built = entity.build_servers(conn, uuids)
    assert len(built) == len(uuids) > 100
    for key, value in built.items():
        feed.validate_entity(feed.KIND_SERVER, key, value)
    assert any(v["deleted"] for v in built.values())
    assert any(v["fault"] for v in built.values())


def test_flavor_entities(tmp_path):
    db = str(tmp_path / "flavors.db")
    outbox.init_cell_db(db, "flavors", flavors=True)
    simulator.seed_flavors(db)
    conn = connection.open_cell(db)
    built = entity.build_flavors(conn, ["1", "6", "8", "404"])
    for key in ("1", "6", "8"):
        feed.validate_entity(feed.KIND_FLAVOR, key, built[key])
    assert built["404"] is None
    assert built["1"] == {"flavorid": "1", "name": "m1.tiny", "memory_mb": 512, "vcpus": 1,
                          "root_gb": 1, "ephemeral_gb": 0, "swap": 0, "rxtx_factor": 1.0,
                          "vcpu_weight": None, "disabled": False, "is_public": True,
                          "description": None, "extra_specs": {}, "projects": [],
                          "created_at": "2026-01-01T00:00:00.000000"}
    assert built["6"]["extra_specs"] == {"hw:cpu_policy": "dedicated", "hw:mem_page_size": "large"}
    assert (built["8"]["is_public"], built["8"]["projects"]) == (False, ["demo"])
    # Nova's API database: host aggregates, flavors, key pairs, quota limits
    assert sqlite_source.kinds_of(conn) == ["aggregate", "flavor", "keypair", "quota",
                                            "server_group"]


def test_aggregate_entities(tmp_path):
    db = str(tmp_path / "flavors.db")
    outbox.init_cell_db(db, "flavors", flavors=True)
    simulator.seed_flavors(db)
    conn = connection.open_cell(db)
    keys = [str(key) for (key,) in conn.execute("SELECT id FROM aggregates ORDER BY name")]
    built = entity.build_aggregates(conn, keys + ["404"])
    assert built["404"] is None
    gpu, west = (built[key] for key in keys)
    for key in keys:
        feed.validate_entity(feed.KIND_AGGREGATE, key, built[key])
    assert (gpu["name"], gpu["metadata"].get("availability_zone")) == ("gpu-hosts", None)
    assert (west["name"], west["metadata"]["availability_zone"]) == ("west-racks", "az-west")
    assert west["hosts"][:2] == ["compute-0002", "compute-0005"]
    assert all(simulator.host_zone(host) == "az-west" for host in west["hosts"])
    # a host leaving the aggregate enqueues the aggregate's key
    head = outbox.outbox_head(conn)
    with conn:
        conn.execute("DELETE FROM aggregate_hosts WHERE host = 'compute-0002'")
    assert [(kind, key) for _seq, kind, key in outbox.read_events(conn, head, 10)
            if kind == "aggregate"] == [("aggregate", west["aggregate_key"])]
    assert "compute-0002" not in entity.build_aggregates(conn, keys)[keys[1]]["hosts"]


def test_service_entities(tmp_path):
    db = str(tmp_path / "cell.db")
    outbox.init_cell_db(db, "cell1")
    simulator.populate(db, 50, 2, seed=1)
    conn = connection.open_cell(db)
    assert "service" in sqlite_source.kinds_of(conn)
    keys = [key for (key,) in conn.execute("SELECT uuid FROM services WHERE deleted = 0 "
                                           "ORDER BY host")]
    built = entity.build_services(conn, keys, entity.Reach(service_down_time=60))
    first = built[keys[0]]
    feed.validate_entity(feed.KIND_SERVICE, keys[0], first)
    assert (first["host"], first["binary"], first["topic"]) == (
        "compute-0000", "nova-compute", "compute")
    assert first["down_after"] == 60 and first["heartbeat"] is not None
    assert entity.build_services(conn, keys[:1])[keys[0]]["down_after"] == 0
    # a heartbeat enqueues the service's key (os-services and the zone detail show its
    # updated_at); a deleted service is gone
    head = outbox.outbox_head(conn)
    with conn:
        conn.execute("UPDATE services SET last_seen_up = updated_at, report_count = 1 "
                     "WHERE uuid = ?", (keys[0],))
        conn.execute("UPDATE services SET deleted = id WHERE uuid = ?", (keys[1],))
    assert [(kind, key) for _seq, kind, key in outbox.read_events(conn, head, 10)
            if kind == "service"] == [("service", keys[0]), ("service", keys[1])]
    assert entity.build_services(conn, keys[1:2])[keys[1]] is None


def test_pages_are_ordered_by_kind_and_key_with_a_cursor(conn):
    keys = sorted(f"00000000-0000-4000-8000-{i:012d}" for i in range(25))
    for key in reversed(keys):
        conn.execute("INSERT INTO instances (uuid, deleted, created_at) VALUES (?, 0, ?)",
                     (key, STAMP))
    seen, after = [], None
    while True:
        items, after = entity.page_entities(conn, ["server"], after, 10)
        seen += [key for _kind, key, _e in items]
        if after is None:
            break
    assert seen == keys
    assert [k for _kind, k, _e in entity.iter_entities(conn, ["server"], page=7)] == keys
    assert entity.count_entities(conn, ["server"]) == 25


@pytest.mark.parametrize("stored,expected", [
    ("2026-12-01 07:30:43.123456", "2026-12-01T07:30:43.123456"),
    ("2026-12-01 07:30:43", "2026-12-01T07:30:43.000000"),
    ("2026-12-01T07:30:43.5Z", "2026-12-01T07:30:43.500000"),
    (None, None),
])
def test_datetimes_are_naive_utc_iso_with_microseconds(stored, expected):
    assert entity.iso(stored) == expected


def test_odd_column_types_are_coerced_so_the_entity_still_validates(conn):
    write_server(conn)
    conn.execute("UPDATE instances SET display_name = 12345, power_state = '4', progress = 'x', "
                 "key_name = 1.5")
    conn.execute("UPDATE instance_metadata SET value = 7 WHERE deleted = 0")
    e = build_one(conn)
    assert (e["display_name"], e["power_state"], e["progress"], e["key_name"]) == (
        "12345", 4, None, "1.5")
    assert e["metadata"] == {"role": "7"}


def test_snapshot_pages_build_what_builds_by_key_build(cell_db, conn):
    """Pages read children by key range, builds by key list: the same entities."""
    simulator.populate(cell_db, 120, 3, seed=7)
    simulator.run_simulator(simulator.SimulatorConfig(cell_db, 0, 120, 3, ops=500, seed=7))
    write_server(conn, U1, 900001)
    conn.execute("INSERT INTO instance_system_metadata (instance_uuid, deleted, key, value) "
                 "VALUES (?, 0, 'image_min_ram', '1024'), (?, 0, 'Image_x', 'y')", (U1, U1))
    # an orphan child row inside a page's key range is ignored
    conn.execute("INSERT INTO instance_metadata (instance_uuid, deleted, key, value) "
                 "VALUES ('00000000-0000-4000-8000-000000000001', 0, 'k', 'v')")
    paged = {key: e for _kind, key, e in entity.iter_entities(conn, ["server"], page=17)}
    uuids = [u for (u,) in conn.execute("SELECT uuid FROM instances ORDER BY uuid")]
    assert list(paged) == uuids
    by_key = entity.build_servers(conn, uuids)
    for uuid in uuids:
        assert json.dumps(paged[uuid]) == json.dumps(by_key[uuid])   # values and key order
    assert paged[U1]["image_properties"] == {"disk_format": "qcow2", "min_ram": "1024"}
    assert paged[U1]["locked_reason"] == "audit"


def test_extra_row_choice_follows_deleted_then_id(conn):
    write_server(conn)
    tiny, large = rows.FLAVORS[0], rows.FLAVORS[3]
    conn.execute("INSERT INTO instance_extra (instance_uuid, deleted, flavor) VALUES (?, 7, ?)",
                 (U1, rows.extra_flavor(tiny)))
    assert build_one(conn)["flavor"]["name"] == "m1.medium"      # the live row wins
    conn.execute("UPDATE instance_extra SET deleted = 3 WHERE deleted = 0")
    assert build_one(conn)["flavor"]["name"] == "m1.tiny"        # else the highest id
    conn.execute("INSERT INTO instance_extra (instance_uuid, deleted, flavor) VALUES (?, 0, ?)",
                 (U1, rows.extra_flavor(large)))
    assert build_one(conn)["flavor"]["name"] == "m1.large"


@pytest.mark.parametrize("text", [
    '[{"a": 1}]', '[18446744073709551616]', '[-9223372036854775809]', '[NaN]', '[1e400]',
    '["\\ud800"]', '{"a": 1, "a": 2}', '[1.5, -0.0, 1E2]', "[1] x", "", "[\ufeff]", "\ufeff[]",
    "[" * 2000 + "]" * 2000,
])
def test_large_documents_parse_as_the_json_module_parses_them(text):
    try:
        expected = json.loads(text) if text else []
    except (TypeError, ValueError):
        expected = []
    except RecursionError:
        with pytest.raises(RecursionError):
            entity._fast_loads(text, [])
        return
    got = entity._fast_loads(text, [])
    assert json.dumps(got) == json.dumps(expected) and type(got) is type(expected)


def test_flavor_texts_of_other_types_are_extracted_as_sqlite_does(conn):
    write_server(conn)
    conn.execute("UPDATE instance_extra SET flavor = 17")
    assert build_one(conn)["flavor"]["memory_mb"] == 4096         # from the instance row
    conn.execute("UPDATE instance_extra SET flavor = 'not json'")
    assert build_one(conn)["flavor"]["name"] == ""


def test_quota_limits_are_published_by_the_api_database_only():
    """Nova's cell databases keep legacy quota tables: a database with instances does not
    publish the quota kind; the API database (or a flavor source) does."""
    assert "quota" not in entity.kinds_in(["instances", "quotas", "quota_classes"])
    assert entity.kinds_in(["flavors", "quotas", "quota_classes", "instance_groups"]) == [
        "flavor", "quota"]


def test_server_group_entities(tmp_path):
    db = str(tmp_path / "flavors.db")
    outbox.init_cell_db(db, "flavors", flavors=True)
    simulator.seed_flavors(db)
    conn = connection.open_cell(db)
    keys = [key for (key,) in conn.execute("SELECT uuid FROM instance_groups ORDER BY id")]
    assert len(keys) == len(simulator.DEMO_SERVER_GROUPS)
    built = entity.build_server_groups(conn, keys + ["gone"])
    assert built["gone"] is None
    for key in keys:
        feed.validate_entity(feed.KIND_SERVER_GROUP, key, built[key])
    web, _db, batch = (built[key] for key in keys)
    assert (web["name"], web["project_id"], web["policy"], web["rules"], web["members"]) == (
        "web-spread", "demo", "anti-affinity", {}, [])
    assert batch["rules"] == {"max_server_per_host": 3}
    with conn:      # as Nova stores them (strings) and reads them (only this rule, an int)
        conn.execute("UPDATE instance_group_policy SET rules = ? WHERE group_id = "
                     "(SELECT id FROM instance_groups WHERE uuid = ?)",
                     ('{"max_server_per_host": "4", "other": "x"}', keys[2]))
    assert entity.build_server_groups(conn, keys[2:])[keys[2]]["rules"] == {
        "max_server_per_host": 4}
    # a member row enqueues its group's key, and is in the group's members
    head = outbox.outbox_head(conn)
    with conn:
        conn.execute("INSERT INTO instance_group_member (instance_uuid, group_id) "
                     "SELECT 'u-1', id FROM instance_groups WHERE uuid = ?", (keys[0],))
    assert [(kind, key) for _seq, kind, key in outbox.read_events(conn, head, 10)
            if kind == "server_group"] == [("server_group", keys[0])]
    assert entity.build_server_groups(conn, keys[:1])[keys[0]]["members"] == ["u-1"]


# The columns a child statement may search by: the page's key, or a row it joined to.
_KEYED = ("(instance_uuid", "(uuid", "(resource_id", "(rowid=?)")


def plans_off_the_key(conn) -> dict[str, list[str]]:
    """Per child statement of a page (by key range and by a list of keys), the steps of
    its query plan that reach rows by anything but the key: empty when each reads only
    the page's own rows. Statements over columns this database lacks are left out (a
    cell database of Nova's holds the API database's instance_group_member of old)."""
    have = set(conn.execute("SELECT m.name, c.name FROM sqlite_master m, "
                            "pragma_table_info(m.name) c WHERE m.type = 'table'"))
    off: dict[str, list[str]] = {}
    for name, needs in entity.CHILD_TABLES.items():
        if name not in entity._CHILD_SQL or not all(need in have for need in needs):
            continue
        for by_keys, params in ((False, ("a", "b")), (True, ("a", "b"))):
            sql = entity._child_sql(name, by_keys, len(params))
            steps = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]
            bad = [step for step in steps if step.startswith("SCAN")
                   or (step.startswith("SEARCH") and not any(k in step for k in _KEYED))]
            if bad:
                off[f"{name} by {'keys' if by_keys else 'range'}"] = bad
    return off


def test_a_snapshot_page_reads_only_its_own_rows(conn):
    # A child statement that SQLite's planner runs through another index (e.g. Nova's
    # (deleted, created_at)) reads the whole table for every page: a snapshot's time
    # then grows with the square of the cell's size.
    assert plans_off_the_key(conn) == {}
