"""A server's availability zone as Nova shows it (its host's zoned aggregate, else the
default zone; without a host, the instance's own) and the publisher's re-read of the
hosts' zones (rechecks.ZoneWatch), over real SQLite databases shaped as Nova's. The
whole path against nova-api: tests/realnova/test_differential_varied.py."""

import sqlite3

from replica.cell import entity, rechecks


def api_db():
    conn = sqlite3.connect(":memory:")
    conn.executescript("""
        CREATE TABLE aggregate_hosts (id INTEGER PRIMARY KEY, host TEXT, aggregate_id INT);
        CREATE TABLE aggregate_metadata (id INTEGER PRIMARY KEY, aggregate_id INT,
                                         "key" TEXT, value TEXT);
        INSERT INTO aggregate_metadata (aggregate_id, "key", value)
            VALUES (1, 'availability_zone', 'zone-1'), (2, 'gpu', 'true'),
                   (3, 'availability_zone', 'zone-3');
        INSERT INTO aggregate_hosts (host, aggregate_id)
            VALUES ('h1', 1), ('h2', 2), ('h3', 3), ('h1', 3);
    """)
    return conn


def rows_of(conn):
    return lambda sql, params=(): conn.execute(sql, params).fetchall()


def test_a_hosts_zone_is_its_first_zoned_aggregates():
    api = rows_of(api_db())
    assert entity.host_zones(api) == {"h1": "zone-1", "h3": "zone-3"}
    assert entity.host_zones(api, ["h2", "h3"]) == {"h3": "zone-3"}


def test_the_watch_returns_the_live_servers_of_the_hosts_whose_zone_changed():
    api_conn = api_db()
    cell = sqlite3.connect(":memory:")
    cell.executescript("""
        CREATE TABLE instances (id INTEGER PRIMARY KEY, uuid TEXT, host TEXT, deleted INT);
        INSERT INTO instances (uuid, host, deleted)
            VALUES ('a', 'h1', 0), ('b', 'h2', 0), ('c', 'h2', 1), ('d', 'h3', 0);
    """)
    watch = rechecks.ZoneWatch(rows_of(cell), rows_of(api_conn))
    assert watch.changed_servers() == []            # first look: nothing to compare
    assert watch.changed_servers() == []
    api_conn.execute("INSERT INTO aggregate_hosts (host, aggregate_id) VALUES ('h2', 1)")
    assert watch.changed_servers() == ["b"]         # h2 joined zone-1 (c is deleted)
    api_conn.execute("UPDATE aggregate_metadata SET value = 'zone-9' WHERE aggregate_id = 3")
    assert watch.changed_servers() == ["d"]         # h1 stays in zone-1 (its first)
    api_conn.execute("DELETE FROM aggregate_hosts WHERE host = 'h2'")
    assert watch.changed_servers() == ["b"]
    assert watch.changed_servers() == []


def test_a_servers_zone_is_its_hosts_with_the_api_database_reached():
    """With a host: the host's zone (else the default zone), whatever the instance's
    column says; without a host: the column. Without the API database: the column."""
    api_conn = api_db()
    cell = sqlite3.connect(":memory:")
    cell.executescript("""
        CREATE TABLE instances (id INTEGER PRIMARY KEY, uuid TEXT, project_id TEXT,
            user_id TEXT, display_name TEXT, display_description TEXT, hostname TEXT,
            created_at TEXT, updated_at TEXT, launched_at TEXT, terminated_at TEXT,
            deleted_at TEXT, deleted INT, vm_state TEXT, task_state TEXT, power_state INT,
            progress INT, host TEXT, node TEXT, availability_zone TEXT, launch_index INT,
            reservation_id TEXT, kernel_id TEXT, ramdisk_id TEXT, root_device_name TEXT,
            user_data TEXT, key_name TEXT, config_drive TEXT, access_ip_v4 TEXT,
            access_ip_v6 TEXT, auto_disk_config INT, locked INT, locked_by TEXT,
            image_ref TEXT, memory_mb INT, vcpus INT, root_gb INT, ephemeral_gb INT);
    """)
    for uuid, host, zone in (("a", "h1", "stale"), ("b", "h2", None), ("c", None, "asked")):
        cell.execute("INSERT INTO instances (uuid, created_at, deleted, host, "
                     "availability_zone, memory_mb, vcpus, root_gb, ephemeral_gb) "
                     "VALUES (?, '2026-12-01 00:00:00', 0, ?, ?, 1, 1, 1, 0)",
                     (uuid, host, zone))
    cell_rows = rows_of(cell)
    reach = entity.Reach(frozenset(), api=rows_of(api_conn), api_children=frozenset({"zones"}),
                         default_zone="az-default")
    built = entity.build_servers(cell_rows, ["a", "b", "c"], reach)
    assert {u: e["availability_zone"] for u, e in built.items()} == {
        "a": "zone-1", "b": "az-default", "c": "asked"}
    built = entity.build_servers(cell_rows, ["a", "b", "c"], entity.Reach(frozenset()))
    assert {u: e["availability_zone"] for u, e in built.items()} == {
        "a": "stale", "b": None, "c": "asked"}
