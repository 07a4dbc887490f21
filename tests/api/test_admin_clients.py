"""The admin reads through real clients: the openstack command line (compute service
list, aggregate list and show, flavor show of a private flavor, which reads its access
list) and openstacksdk, with keystoneauth's "none" auth as the appliance's admin."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.api import entities as E
from tests.api.conftest import ADMIN, serving
from tests.conftest import VENV_BIN

pytestmark = pytest.mark.filterwarnings("ignore:::openstack.*")

FLAVORS = [E.flavor("1"), E.flavor("p1", "shared-one", is_public=False,
                                   projects=[E.OTHER_PROJECT, E.PROJECT])]
SERVICES = [E.service(1, "compute-1"), E.service(2, "compute-2", disabled=True,
                                                  disabled_reason="maintenance"),
            E.service(3, "control-1", "nova-conductor")]
AGGREGATES = [E.aggregate(1, "az-west", ["compute-1"], {"availability_zone": "west"}),
              E.aggregate(2, "gpus", ["compute-2"], {"gpu": "yes"})]


@pytest.fixture(scope="module")
def admin_api(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("admin-clients") / "replica.db")
    E.fill_replica(path, [], FLAVORS, {"cell1": 1, "flavors": 5})
    E.fill_kind(path, "service", "cell1", SERVICES)
    E.fill_kind(path, "aggregate", "flavors", AGGREGATES)
    with serving(path, env={"NOAUTH_DEFAULT": ADMIN}) as client:
        yield client


def _openstack(api, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    out = subprocess.run(
        [os.path.join(VENV_BIN, "openstack"), "--os-auth-type", "none", "--os-endpoint",
         f"http://127.0.0.1:{api.port}/v2.1", "--os-identity-api-version", "3", *args,
         "-f", "json"], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_openstack_compute_service_list(admin_api):
    listed = _openstack(admin_api, "compute", "service", "list")
    assert [(s["Binary"], s["Host"], s["Zone"], s["Status"], s["State"]) for s in listed] == [
        ("nova-compute", "compute-1", "west", "enabled", "up"),
        ("nova-compute", "compute-2", "nova", "disabled", "up"),
        ("nova-conductor", "control-1", "internal", "enabled", "up")]
    assert listed[0]["ID"] == SERVICES[0]["uuid"]             # a 2.53+ microversion
    only = _openstack(admin_api, "compute", "service", "list", "--host", "compute-2")
    assert [s["Host"] for s in only] == ["compute-2"]


def test_openstack_aggregate_list_and_show(admin_api):
    listed = _openstack(admin_api, "aggregate", "list")
    assert [(a["ID"], a["Name"], a["Availability Zone"]) for a in listed] == [
        (1, "az-west", "west"), (2, "gpus", None)]
    shown = _openstack(admin_api, "aggregate", "show", "gpus")
    assert shown["hosts"] == ["compute-2"] and shown["properties"] == {"gpu": "yes"}


def test_openstack_flavor_show_of_a_private_flavor(admin_api):
    shown = _openstack(admin_api, "flavor", "show", "shared-one")
    assert shown["os-flavor-access:is_public"] is False
    assert sorted(shown["access_project_ids"]) == sorted([E.OTHER_PROJECT, E.PROJECT])


def test_openstacksdk(admin_api):
    import openstack
    conn = openstack.connection.Connection(
        auth_type="none", compute_endpoint_override=f"http://127.0.0.1:{admin_api.port}/v2.1")
    try:
        services = list(conn.compute.services())
        assert [(s.binary, s.host, s.availability_zone, s.state) for s in services] == [
            ("nova-compute", "compute-1", "west", "up"),
            ("nova-compute", "compute-2", "nova", "up"),
            ("nova-conductor", "control-1", "internal", "up")]
        aggregates = list(conn.compute.aggregates())
        assert [(a.name, a.availability_zone, a.hosts) for a in aggregates] == [
            ("az-west", "west", ["compute-1"]), ("gpus", None, ["compute-2"])]
        assert conn.compute.get_aggregate(2).metadata == {"gpu": "yes"}
        access = conn.compute.get_flavor_access("p1")
        assert sorted(a["tenant_id"] for a in access) == sorted([E.OTHER_PROJECT, E.PROJECT])
    finally:
        conn.close()
