"""Real clients against the API: openstacksdk and the openstack command line, with
keystoneauth's "none" auth (the default identity of the appliance)."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.api import entities as E
from tests.conftest import VENV_BIN

# openstacksdk warns about its own deprecations on every call: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:::openstack.*")


def test_openstacksdk(anon_api):
    import openstack
    conn = openstack.connection.Connection(
        auth_type="none", compute_endpoint_override=f"http://127.0.0.1:{anon_api.port}/v2.1")
    try:
        servers = list(conn.compute.servers(details=True))
        assert len(servers) == 28
        assert servers[0].name == "server-29"
        assert servers[0].flavor.original_name == "m1.tiny"   # negotiated a 2.47+ version
        one = conn.compute.get_server(E.server(13)["uuid"])
        assert one.name == "server-13"
        assert one.addresses["private"][0]["addr"] == "10.0.0.13"
        assert one.status == "ACTIVE"
        assert [f.name for f in conn.compute.flavors()] == [
            "m1.tiny", "m1.small", "m1.medium", "private"]
        paged = list(conn.compute.servers(details=False, limit=7))
        assert len(paged) == 28 and len({s.id for s in paged}) == 28
    finally:
        conn.close()


def test_openstack_cli_server_list(anon_api):
    cli = os.path.join(VENV_BIN, "openstack")
    # --os-identity-api-version 3: without it the CLI refuses the none plugin's
    # endpoint ("requires API version '3'").
    out = subprocess.run(
        [cli, "--os-auth-type", "none", "--os-endpoint",
         f"http://127.0.0.1:{anon_api.port}/v2.1", "--os-identity-api-version", "3",
         "server", "list", "-f", "value", "-c", "ID", "-c", "Name", "-c", "Status"],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 28
    assert lines[0].split() == [E.server(29)["uuid"], "server-29", "ACTIVE"]


@pytest.fixture(scope="module")
def zones_api(tmp_path_factory):
    """A replica with availability zones and server groups, as a client without a token
    sees it."""
    from tests.api.conftest import serving
    path = str(tmp_path_factory.mktemp("clients-zones") / "replica.db")
    E.fill_replica(path, [], [E.flavor()], {"cell1": 1, "flavors": 1})
    E.fill_zones(path, [("cell1", E.service(1, "compute-1")),
                        ("cell1", E.service(2, "compute-2")),
                        ("cell1", E.service(3, "compute-3", disabled=True))],
                 [E.zoned_aggregate(1, "az-east", ["compute-1"]),
                  E.zoned_aggregate(2, "az-dark", ["compute-3"])])
    E.fill_server_groups(path, GROUPS)
    with serving(path, env={"NOAUTH_DEFAULT": f"fake:{E.PROJECT}"}) as client:
        yield client


GROUPS = [E.server_group(1, name="web", policy="anti-affinity"),
          E.server_group(2, name="db", policy="soft-affinity"),
          E.server_group(3, name="theirs", project_id=E.OTHER_PROJECT)]


def _cli(api, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [os.path.join(VENV_BIN, "openstack"), "--os-auth-type", "none", "--os-endpoint",
         f"http://127.0.0.1:{api.port}/v2.1", "--os-identity-api-version", "3", *args],
        capture_output=True, text=True, timeout=120)


def test_openstacksdk_availability_zones(zones_api):
    import openstack
    conn = openstack.connection.Connection(
        auth_type="none", compute_endpoint_override=f"http://127.0.0.1:{zones_api.port}/v2.1")
    try:
        zones = [(z.name, z.state["available"]) for z in conn.compute.availability_zones()]
        assert zones == [("az-east", True), ("nova", True), ("az-dark", False)]
    finally:
        conn.close()


def test_openstack_cli_availability_zone_list(zones_api):
    out = _cli(zones_api, "availability", "zone", "list", "--compute", "-f", "value")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["az-east available", "nova available",
                                       "az-dark not available"]


def test_openstacksdk_server_groups(zones_api):
    import openstack
    conn = openstack.connection.Connection(
        auth_type="none", compute_endpoint_override=f"http://127.0.0.1:{zones_api.port}/v2.1")
    try:
        groups = [(g.name, g.policy) for g in conn.compute.server_groups()]
        assert groups == [("web", "anti-affinity"), ("db", "soft-affinity")]
        one = conn.compute.get_server_group(GROUPS[0]["group_key"])
        assert (one.name, one.member_ids) == ("web", [])
    finally:
        conn.close()


def test_openstack_cli_server_group_list(zones_api):
    out = _cli(zones_api, "server", "group", "list", "-f", "value", "-c", "Name",
               "-c", "Policy")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["web anti-affinity", "db soft-affinity"]
