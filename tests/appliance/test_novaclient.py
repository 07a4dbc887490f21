"""python-novaclient's Python API against a running demo: a keystoneauth session with the
"none" plugin and the endpoint given, servers listed with details, one fetched, flavors
listed; every value compared with what the API itself answers."""

from __future__ import annotations

import json

import pytest
from keystoneauth1 import session as ks_session
from keystoneauth1.noauth import NoAuth
from novaclient import client as nova_client

from tests.appliance.conftest import PYTHON, get, start_process
from tests.conftest import ROOT, free_port, wait_for

SERVERS = 60
TOKEN = "admin:demo"  # what the "none" plugin's token stands for in the demo


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A demo without churn (the values compared do not move under the test)."""
    tmp = tmp_path_factory.mktemp("novaclient")
    port, admin_port = free_port(), free_port()
    argv = [PYTHON, "-m", "appliance", "demo", "--port", str(port), "--admin-port",
            str(admin_port), "--servers", str(SERVERS), "--rate", "0", "--workers", "1"]
    running = start_process(argv, {"TMPDIR": str(tmp)}, tmp / "out", port=port,
                            admin_port=admin_port, cwd=ROOT, new_session=True)
    try:
        wait_for(lambda: "The appliance is ready." in running.log(), timeout=90,
                 what="demo ready")
        # Ready means every feed was live once; the snapshot may still be applying.
        wait_for(lambda: len(_raw(port, "/v2.1/servers?all_tenants=1&limit=1000")
                             ["servers"]) == SERVERS, timeout=60, what="every server in")
        running.remember_children()
        yield running
    finally:
        running.stop()


def _raw(port: int, path: str, microversion: str = "2.1") -> dict:
    status, body, _ = get(port, path, headers={"X-Auth-Token": TOKEN,
                                               "OpenStack-API-Version": f"compute {microversion}"})
    assert status == 200, body
    return json.loads(body)


def _nova(port: int, version: str):
    session = ks_session.Session(auth=NoAuth())
    return nova_client.Client(version, session=session,
                              endpoint_override=f"http://127.0.0.1:{port}/v2.1")


def test_novaclient_lists_servers_with_details(demo):
    nova = _nova(demo.port, "2.1")
    servers = nova.servers.list(detailed=True, search_opts={"all_tenants": 1})
    raw = {s["id"]: s for s in _raw(demo.port, "/v2.1/servers/detail?all_tenants=1"
                                                "&limit=1000")["servers"]}
    assert len(servers) == SERVERS == len(raw)
    for server in servers:
        expected = raw[server.id]
        assert server.name == expected["name"]
        assert server.status == expected["status"]
        assert server.tenant_id == expected["tenant_id"]
        assert server.flavor == expected["flavor"]
        assert getattr(server, "OS-EXT-STS:vm_state") == expected["OS-EXT-STS:vm_state"]
        assert server.addresses == expected["addresses"]
    assert {s.status for s in servers} <= {"ACTIVE", "BUILD", "SHUTOFF", "ERROR",
                                           "PAUSED", "SUSPENDED", "RESIZE", "VERIFY_RESIZE",
                                           "SHELVED_OFFLOADED", "REBOOT", "HARD_REBOOT"}
    # A filter and a page, as novaclient sends them.
    first = sorted(servers, key=lambda s: s.name)[0]
    named = nova.servers.list(search_opts={"all_tenants": 1, "name": f"^{first.name}$"})
    assert [s.id for s in named] == [first.id]
    page = nova.servers.list(search_opts={"all_tenants": 1}, limit=7)
    assert len(page) == 7


def test_novaclient_gets_one_server_at_a_high_microversion(demo):
    nova = _nova(demo.port, "2.79")
    some = nova.servers.list(search_opts={"all_tenants": 1}, limit=1)[0]
    server = nova.servers.get(some.id)
    expected = _raw(demo.port, f"/v2.1/servers/{some.id}", "2.79")["server"]
    assert server.id == some.id == expected["id"]
    assert server.name == expected["name"] and server.status == expected["status"]
    # From 2.47 on the flavor is embedded; it matches the flavor of the same name.
    assert server.flavor == expected["flavor"]
    flavors = {f.name: f for f in nova.flavors.list()}
    embedded = flavors[server.flavor["original_name"]]
    assert (server.flavor["ram"], server.flavor["vcpus"], server.flavor["disk"]) == \
        (embedded.ram, embedded.vcpus, embedded.disk)
    assert nova.api_version.get_string() == "2.79"


def test_novaclient_lists_flavors(demo):
    nova = _nova(demo.port, "2.1")
    flavors = nova.flavors.list()
    raw = {f["id"]: f for f in _raw(demo.port, "/v2.1/flavors/detail")["flavors"]}
    assert flavors and {f.id for f in flavors} == set(raw)
    for flavor in flavors:
        expected = raw[flavor.id]
        assert (flavor.name, flavor.ram, flavor.vcpus, flavor.disk) == \
            (expected["name"], expected["ram"], expected["vcpus"], expected["disk"])
        assert flavor.is_public == expected["os-flavor-access:is_public"]
    tiny = nova.flavors.get("1")
    assert (tiny.name, tiny.ram, tiny.vcpus, tiny.disk) == ("m1.tiny", 512, 1, 1)
    assert nova.flavors.find(name="m1.small").ram == 2048


def test_novaclient_reads_the_version_document(demo):
    current = _nova(demo.port, "2.1").versions.get_current()
    assert (current.id, current.min_version, current.version) == ("v2.1", "2.1", "2.104")


def test_novaclient_lists_services_aggregates_and_flavor_access(demo):
    """The admin reads (the demo's identity is an admin): services with their zones from
    the demo's aggregates, the aggregates, a private flavor's access list."""
    nova = _nova(demo.port, "2.53")
    services = nova.services.list()
    raw = _raw(demo.port, "/v2.1/os-services", "2.53")["services"]
    assert services and [s.id for s in services] == [s["id"] for s in raw]
    assert {s.binary for s in services} == {"nova-compute"}
    assert all(s.state == "up" and s.status == "enabled" for s in services)
    # the demo's few hosts are in no zone's aggregate (west-racks holds every third host)
    assert {s.zone for s in services} == {"nova"}
    assert [s.host for s in nova.services.list(host="compute-0001")] == ["compute-0001"] * len(
        [s for s in raw if s["host"] == "compute-0001"])
    aggregates = nova.aggregates.list()
    assert [(a.name, a.availability_zone) for a in aggregates] == [
        ("west-racks", "az-west"), ("gpu-hosts", None)]
    assert nova.aggregates.get(aggregates[1].id).metadata == {"gpu": "true"}
    access = nova.flavor_access.list(flavor=nova.flavors.get("8"))
    assert [(a.flavor_id, a.tenant_id) for a in access] == [("8", "demo")]
