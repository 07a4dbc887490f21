"""Smoke tests of the real-Nova harness: the MariaDB server, Nova's own tooling writing its
databases, and real nova-api answering from them."""

from __future__ import annotations

import os

import pymysql
import pytest

from tests.realnova import env as realnova_env
from tests.realnova.mariadb import MariaDB, mariadb_fixture, scratch_dir
from tests.realnova.nova_api import neutron_stub_fixture
from tests.realnova.stack import nova_stacks_fixture

mariadb = mariadb_fixture(scope="module")
neutron = neutron_stub_fixture(scope="module")


def test_missing_side_environment_is_an_error_that_says_how_to_build_it(monkeypatch, tmp_path):
    monkeypatch.setenv(realnova_env.ENV_VAR, str(tmp_path / "no-such-venv"))
    with pytest.raises(realnova_env.NovaEnvMissing) as missing:
        realnova_env.nova_env()
    assert "build/nova-env.sh" in str(missing.value)
    assert str(tmp_path / "no-such-venv") in str(missing.value)


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


def test_mariadb_binlogs_rotate_and_purge(mariadb):
    first = mariadb.binlog_files()
    new = mariadb.rotate_binlog()
    assert new not in first and mariadb.binlog_files() == first + [new]
    mariadb.create_database("harness_purge")
    mariadb.purge_binlogs()
    remaining = mariadb.binlog_files()
    assert len(remaining) == 1 and remaining[0] not in first + [new]
    assert mariadb.gtid_binlog_pos()          # the GTID state survives the purge


def test_mariadb_on_disk_when_asked():
    with scratch_dir("mariadb-disk") as base_dir:
        server = MariaDB(base_dir, server_id=7, in_memory=False)
        try:
            server.start()
            assert server.datadir.startswith(base_dir)
            assert server.scalar("SELECT @@datadir").rstrip("/") == server.datadir
            assert server.scalar("SELECT @@server_id") == 7
        finally:
            server.remove()
        assert not server.running and not os.path.exists(server.datadir)


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


# -- Nova's own tooling on both backends ------------------------------------------------------

def populate_and_keep_compute_1_alive(stack):
    data = populate(stack.deployment, stack.writer, stack.neutron)
    stack.writer.start_heartbeats(["compute-1"])     # compute-2 has stopped reporting
    return data


stacks = nova_stacks_fixture(populate=populate_and_keep_compute_1_alive, scope="module")


@pytest.fixture(scope="module", params=["mariadb", "sqlite"])
def stack(request, stacks):
    return stacks[request.param]


@pytest.fixture(scope="module")
def nova(stack):
    return stack.deployment


@pytest.fixture(scope="module")
def populated(stack):
    return stack.data


@pytest.fixture(scope="module")
def nova_api(stack):
    return stack.api


def populate(nova, writer, neutron):
    """Flavors, two hosts and a few servers in every state the harness writes."""
    writer.create_flavor(name="m1.small", vcpus=1, memory_mb=2048, root_gb=20,
                         flavorid="2", extra_specs={"hw:cpu_policy": "shared"})
    writer.create_flavor(name="m1.medium", vcpus=2, memory_mb=4096, root_gb=40,
                         flavorid="3")
    writer.create_flavor(name="tenant-only", vcpus=4, memory_mb=8192, root_gb=80,
                         flavorid="private-1", is_public=False, projects=["project-a"])
    writer.create_compute(host="compute-1", az="zone-1")
    writer.create_compute(host="compute-2")
    writer.create_keypair(user_id="user-a", name="key-a")
    group = writer.create_server_group(user_id="user-a", project_id="project-a",
                                       name="spread")
    active = writer.build_server(
        user_id="user-a", project_id="project-a", flavor="2", name="web-1",
        key_name="key-a", metadata={"role": "web"}, tags=["blue"],
        server_group=group["uuid"], host="compute-1",
        networks=[{"label": "private", "fixed": ["10.0.0.5", "fd00::5"],
                   "floating": ["172.24.4.10"]}])
    stopped = writer.build_server(user_id="user-a", project_id="project-a", flavor="2",
                                  name="db-1", host="compute-2")
    writer.stop(uuid=stopped["uuid"])
    writer.resize(uuid=active["uuid"], flavor="3")
    writer.set_metadata(uuid=active["uuid"], metadata={"tier": "front"})
    writer.delete_metadata(uuid=active["uuid"], key="role")
    failed = writer.build_server(user_id="user-a", project_id="project-a", flavor="2",
                                 name="broken-1")
    writer.fault(uuid=failed["uuid"], message="Unexpected build failure")
    requested = writer.build_server(user_id="user-b", project_id="project-b",
                                    flavor="2", name="queued-1", stage="requested")
    buried = writer.build_server(user_id="user-b", project_id="project-b", flavor="2",
                                 name="nowhere-1", stage="cell0")
    gone = writer.build_server(user_id="user-b", project_id="project-b", flavor="2",
                               name="gone-1")
    writer.delete(uuid=gone["uuid"])
    bulk = writer.build_servers(count=20, user_id="user-b", project_id="project-b",
                                flavor="2", name_prefix="bulk")
    writer.service_down(host="compute-2")
    for server in (active, stopped, failed, *bulk["servers"]):
        neutron.add_server(server)
    archived = nova.archive_deleted_rows()
    return {"active": active, "stopped": stopped, "failed": failed, "requested": requested,
            "buried": buried, "gone": gone, "bulk": bulk["servers"], "archived": archived}


def _p(nova):
    return "%s" if nova.backend == "mariadb" else "?"


def test_nova_manage_made_the_schema_and_cells(nova):
    cells = dict(nova.query("api", "SELECT name, database_connection FROM cell_mappings"))
    assert cells == {"cell0": nova.cell0_url, "cell1": nova.cell_url}
    for database in ("cell0", "cell1"):
        tables = {row[0] for row in nova.query(
            database, "SELECT table_name FROM information_schema.tables "
                      "WHERE table_schema = DATABASE()" if nova.backend == "mariadb" else
                      "SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"instances", "shadow_instances", "instance_metadata", "services",
                "block_device_mapping", "instance_info_caches"} <= tables
    api_tables = {row[0] for row in nova.query(
        "api", "SELECT table_name FROM information_schema.tables "
               "WHERE table_schema = DATABASE()" if nova.backend == "mariadb" else
               "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"flavors", "request_specs", "build_requests", "instance_mappings",
            "instance_groups", "key_pairs"} <= api_tables


def test_writer_builds_servers_as_nova_does(nova, populated):
    p = _p(nova)
    rows = dict((r[0], r[1:]) for r in nova.query(
        "cell1", "SELECT display_name, vm_state, power_state, task_state, host, "
                 "instance_type_id, launched_at IS NOT NULL, deleted "
                 "FROM instances WHERE display_name NOT LIKE 'bulk-%'"))
    medium_id = nova.query("api", f"SELECT id FROM flavors WHERE flavorid = {p}", ("3",))[0][0]
    assert rows["web-1"] == ("active", 1, None, "compute-1", medium_id, 1, 0)
    assert rows["db-1"][:4] == ("stopped", 4, None, "compute-2")
    assert rows["broken-1"][0] == "error"
    assert "gone-1" not in rows                  # deleted, then archived
    assert "queued-1" not in rows and "nowhere-1" not in rows
    assert nova.query("cell1", "SELECT COUNT(*) FROM instances "
                               "WHERE display_name LIKE 'bulk-%' AND vm_state = 'active'"
                      ) == [(20,)]
    assert nova.query("cell1", f"SELECT display_name FROM shadow_instances") == [("gone-1",)]
    assert nova.query("cell0", "SELECT display_name, vm_state FROM instances") == [
        ("nowhere-1", "error")]
    assert nova.query("api", "SELECT instance_uuid FROM build_requests") == [
        (populated["requested"]["uuid"],)]
    mappings = dict(nova.query(
        "api", "SELECT m.instance_uuid, c.name FROM instance_mappings m "
               "LEFT JOIN cell_mappings c ON c.id = m.cell_id"))
    assert mappings[populated["active"]["uuid"]] == "cell1"
    assert mappings[populated["buried"]["uuid"]] == "cell0"
    assert mappings[populated["requested"]["uuid"]] is None
    assert populated["gone"]["uuid"] not in mappings
    web = populated["active"]["uuid"]
    assert dict(nova.query("cell1", f"SELECT `key`, value FROM instance_metadata "
                                    f"WHERE instance_uuid = {p} AND deleted = 0"
                           if nova.backend == "mariadb" else
                           "SELECT key, value FROM instance_metadata "
                           "WHERE instance_uuid = ? AND deleted = 0", (web,))) == {
        "tier": "front"}
    network_info = nova.query("cell1", f"SELECT network_info FROM instance_info_caches "
                                       f"WHERE instance_uuid = {p}", (web,))[0][0]
    assert "172.24.4.10" in network_info and "fd00::5" in network_info
    faults = nova.query("cell1", f"SELECT message FROM instance_faults "
                                 f"WHERE instance_uuid = {p}", (populated["failed"]["uuid"],))
    assert faults == [("Unexpected build failure",)]
    assert "cell1.instances" in populated["archived"]


# -- real nova-api over those databases -------------------------------------------------------

def _servers(nova_api, token, query=""):
    status, body = nova_api.get(f"/v2.1/servers/detail{query}", token=token,
                                microversion="2.100")
    assert status == 200, body
    return {server["name"]: server for server in body["servers"]}


def test_nova_api_lists_servers_to_member_and_admin(populated, nova_api):
    member = _servers(nova_api, "user-a:project-a")
    assert set(member) == {"web-1", "db-1", "broken-1"}
    web = member["web-1"]
    assert web["status"] == "ACTIVE" and web["flavor"]["original_name"] == "m1.medium"
    assert web["metadata"] == {"tier": "front"} and web["tags"] == ["blue"]
    assert web["key_name"] == "key-a"
    assert web["OS-EXT-AZ:availability_zone"] == "zone-1"
    assert web["security_groups"] == [{"name": "default"}]
    assert sorted((a["addr"], a["OS-EXT-IPS:type"]) for a in web["addresses"]["private"]) == [
        ("10.0.0.5", "fixed"), ("172.24.4.10", "floating"), ("fd00::5", "fixed")]
    assert member["db-1"]["status"] == "SHUTOFF"
    assert member["broken-1"]["status"] == "ERROR"
    assert "OS-EXT-SRV-ATTR:host" not in web            # admin-only field
    assert "host_status" not in web

    admin = {name: server for name, server in
             _servers(nova_api, "root:project-admin:admin", "?all_tenants=1").items()
             if server["tenant_id"] in ("project-a", "project-b")}  # later tests add more
    assert set(admin) == {"web-1", "db-1", "broken-1", "queued-1", "nowhere-1",
                          *(f"bulk-{n}" for n in range(20))}
    assert admin["web-1"]["OS-EXT-SRV-ATTR:host"] == "compute-1"
    assert admin["web-1"]["host_status"] == "UP"
    assert admin["db-1"]["host_status"] == "UNKNOWN"      # compute-2 stopped reporting
    assert admin["queued-1"]["status"] == "BUILD"         # still a build request
    assert admin["nowhere-1"]["status"] == "ERROR"        # buried in cell0
    assert admin["broken-1"]["fault"]["message"] == "Unexpected build failure"

    other = _servers(nova_api, "user-b:project-b")
    assert "web-1" not in other and "bulk-0" in other
    status, _body = nova_api.get("/v2.1/servers/detail", token="not-a-token")
    assert status == 401
    assert str(nova_api) == nova_api.url and nova_api.url.startswith("http://127.0.0.1:")


def test_bulk_servers_render_as_stepwise_built_ones(stack, nova_api):
    """The bulk path writes the same rows as the step-by-step build: nova-api renders the
    two servers alike but for what is unique to each."""
    writer = stack.writer
    writer.create_keypair(user_id="user-c", name="key-c")
    common = dict(user_id="user-c", project_id="project-c", flavor="2", key_name="key-c",
                  metadata={"a": "b"}, tags=["t"], az="zone-1", host="compute-1",
                  scheduler_hints={"team": "c"},
                  networks=[{"label": "private", "fixed": ["10.9.0.5", "fd00:9::5"],
                             "floating": ["172.24.9.9"]}])
    stepwise = writer.build_server(name="twin", **common)
    bulk = writer.build_servers(count=1, name_prefix="twin", **common)["servers"][0]
    rendered = []
    for server in (stepwise, bulk):
        stack.neutron.add_server(server)
        status, body = nova_api.get(f"/v2.1/servers/{server['uuid']}",
                                    token="root:project-admin:admin", microversion="2.100")
        assert status == 200, body
        rendered.append(body["server"])
    unique = {"id", "name", "links", "created", "updated", "OS-SRV-USG:launched_at",
              "OS-EXT-SRV-ATTR:hostname", "OS-EXT-SRV-ATTR:instance_name",
              "OS-EXT-SRV-ATTR:reservation_id"}
    for server in rendered:
        for vif_addresses in server["addresses"].values():
            for address in vif_addresses:
                address.pop("OS-EXT-IPS-MAC:mac_addr")
    first, second = ({k: v for k, v in server.items() if k not in unique}
                     for server in rendered)
    assert first == second
    assert first["status"] == "ACTIVE" and first["pinned_availability_zone"] == "zone-1"
    assert first["scheduler_hints"] == {"team": ["c"]}   # a request spec keeps lists


def test_nova_api_answers_flavors_and_server_subresources(populated, nova_api):
    member = "user-a:project-a"
    status, body = nova_api.get("/v2.1/flavors/detail", token=member, microversion="2.100")
    assert status == 200
    assert {f["id"] for f in body["flavors"]} == {"2", "3", "private-1"}   # access granted
    status, body = nova_api.get("/v2.1/flavors/detail", token="user-b:project-b")
    assert {f["id"] for f in body["flavors"]} == {"2", "3"}
    status, body = nova_api.get("/v2.1/flavors/2/os-extra_specs", token=member)
    assert (status, body) == (200, {"extra_specs": {"hw:cpu_policy": "shared"}})
    web = populated["active"]["uuid"]
    assert nova_api.get(f"/v2.1/servers/{web}/metadata", token=member) == (
        200, {"metadata": {"tier": "front"}})
    assert nova_api.get(f"/v2.1/servers/{web}/tags", token=member,
                        microversion="2.26") == (200, {"tags": ["blue"]})
    status, body = nova_api.get(f"/v2.1/servers/{web}/ips", token=member)
    assert status == 200 and {a["addr"] for a in body["addresses"]["private"]} == {
        "10.0.0.5", "fd00::5", "172.24.4.10"}
    status, body = nova_api.get(f"/v2.1/servers/{web}", token="user-b:project-b")
    assert status == 404 and body["itemNotFound"]["code"] == 404


def test_host_status_follows_the_services_as_nova_sees_them(stack, nova_api):
    writer = stack.writer
    for host in ("compute-forced", "compute-disabled", "compute-alive"):
        writer.create_compute(host=host)
    servers = {host: writer.build_server(user_id="user-d", project_id="project-d",
                                         flavor="2", name=f"on-{host}", host=host)["uuid"]
               for host in ("compute-forced", "compute-disabled", "compute-alive")}
    writer.service_force_down(host="compute-forced")
    writer.service_disable(host="compute-disabled", reason="maintenance window")
    for host in ("compute-disabled", "compute-alive"):
        writer.service_heartbeat(host=host)
    seen = {}
    for host, uuid in servers.items():
        status, body = nova_api.get(f"/v2.1/servers/{uuid}", token="root:project-admin:admin",
                                    microversion="2.16")
        assert status == 200, body
        seen[host] = body["server"]["host_status"]
    assert seen == {"compute-forced": "DOWN", "compute-disabled": "MAINTENANCE",
                    "compute-alive": "UP"}


def test_writer_states_as_nova_api_shows_them(stack, nova_api):
    writer = stack.writer
    owner = dict(user_id="user-e", project_id="project-e", flavor="2", host="compute-1")
    spawning = writer.build_server(name="spawning", stage="scheduled", **owner)["uuid"]
    verify = writer.build_server(name="verify", **owner)["uuid"]
    writer.resize(uuid=verify, flavor="3", confirm=False)
    soft_deleted = writer.build_server(name="soft", **owner)["uuid"]
    writer.soft_delete(uuid=soft_deleted)
    restored = writer.build_server(name="restored", **owner)["uuid"]
    writer.soft_delete(uuid=restored)
    writer.restore(uuid=restored)
    gone = writer.build_server(name="gone", **owner)["uuid"]
    writer.delete(uuid=gone)
    queued = writer.build_server(name="queued", stage="requested", **owner)["uuid"]
    writer.delete(uuid=queued)

    def show(uuid, token="user-e:project-e"):
        status, body = nova_api.get(f"/v2.1/servers/{uuid}", token=token, microversion="2.100")
        return status, body

    status, body = show(spawning)
    assert (body["server"]["status"], body["server"]["OS-EXT-STS:task_state"]) == (
        "BUILD", "spawning")
    status, body = show(verify)
    assert body["server"]["status"] == "VERIFY_RESIZE"
    assert body["server"]["flavor"]["original_name"] == "m1.medium"
    assert show(soft_deleted)[1]["server"]["status"] == "SOFT_DELETED"
    assert show(restored)[1]["server"]["status"] == "ACTIVE"
    assert show(gone)[0] == 404 and show(queued)[0] == 404
    status, body = nova_api.get("/v2.1/servers/detail?all_tenants=1&deleted=true&"
                                "project_id=project-e", token="root:project-admin:admin",
                                microversion="2.100")
    assert status == 200
    # Nova's deleted filter takes the soft-deleted ones too.
    assert {s["name"]: s["status"] for s in body["servers"]} == {
        "gone": "DELETED", "soft": "SOFT_DELETED"}


def test_catalog_and_server_edits_through_the_writer(stack, nova_api):
    writer = stack.writer
    admin = "root:project-admin:admin"
    writer.create_flavor(name="edit-me", vcpus=1, memory_mb=256, root_gb=1, flavorid="edit",
                         description="before")
    writer.set_flavor_extra_specs(flavorid="edit", extra_specs={"a": "1", "b": "2"})
    writer.delete_flavor_extra_spec(flavorid="edit", key="a")
    assert nova_api.get("/v2.1/flavors/edit/os-extra_specs", token=admin) == (
        200, {"extra_specs": {"b": "2"}})
    writer.create_flavor(name="shared", vcpus=1, memory_mb=256, root_gb=1, flavorid="shared",
                         is_public=False)
    writer.add_flavor_access(flavorid="shared", project_id="project-f")
    status, body = nova_api.get("/v2.1/flavors/shared/os-flavor-access", token=admin)
    assert body == {"flavor_access": [{"flavor_id": "shared", "tenant_id": "project-f"}]}
    writer.delete_flavor(flavorid="edit")
    assert nova_api.get("/v2.1/flavors/edit", token=admin)[0] == 404

    owner = "user-f:project-f"
    uuid = writer.build_server(user_id="user-f", project_id="project-f", flavor="shared",
                               name="editable", host="compute-1", tags=["x"])["uuid"]
    writer.set_tags(uuid=uuid, tags=["y", "z"])
    writer.update(uuid=uuid, name="renamed", description="text")
    ports = writer.set_network_info(uuid=uuid, networks=[
        {"label": "public", "fixed": ["203.0.113.7"]}])["ports"]
    writer.set_state(uuid=uuid, vm_state="paused", power_state=3, locked=True)
    status, body = nova_api.get(f"/v2.1/servers/{uuid}", token=owner, microversion="2.100")
    server = body["server"]
    assert (server["name"], server["description"], server["status"]) == (
        "renamed", "text", "PAUSED")
    assert sorted(server["tags"]) == ["y", "z"] and server["locked"] is True
    assert [a["addr"] for a in server["addresses"]["public"]] == ["203.0.113.7"]
    assert ports[0]["device_id"] == uuid
