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
