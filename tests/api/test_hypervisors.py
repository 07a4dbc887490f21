"""GET /os-hypervisors, /detail, /{id} and (before 2.53) /{pattern}/search and
/{pattern}/servers: admin only, one statement each, every view range (2.28 cpu_info,
2.33 paging, 2.53 uuids and query parameters, 2.75 empty servers, 2.88 no resources),
Nova's 400, 403 and 404; statistics and uptime are not replicated."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import os
import subprocess

import pytest

from tests.api import entities as E
from tests.api.conftest import ADMIN, MEMBER, serving
from tests.conftest import VENV_BIN

# cell1: compute nodes 1 and 2, and 3 whose host has no live nova-compute service (Nova
# leaves it out); cell2: compute node 1 (the same integer id, another uuid)
NODES = [("cell1", E.hypervisor(1)), ("cell1", E.hypervisor(2, state="down")),
         ("cell1", E.hypervisor(3, service_id=None, service_uuid=None)),
         ("cell2", E.hypervisor(11, "compute-9", id=1, service_disabled=True,
                                service_disabled_reason="maintenance", cpu_info=None))]
SERVERS = [("cell1", E.server(0, host="compute-1")), ("cell1", E.server(1, host="compute-1")),
           ("cell1", E.server(2, host="compute-2", deleted=True)),
           ("cell2", E.server(3, host="compute-9"))]
UUID = {(cell, h["id"]): h["uuid"] for cell, h in NODES}


@pytest.fixture(scope="module")
def hypervisors_api(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("hypervisors") / "replica.db")
    E.fill_replica(path, SERVERS, [E.flavor()], {"cell1": 3, "cell2": 4, "flavors": 1})
    E.fill_hypervisors(path, NODES)
    # the clients below send no token: the default one is an admin's
    with serving(path, env={"NOAUTH_DEFAULT": ADMIN}) as client:
        yield client


def _get(api, path, version="2.1", token=ADMIN, status=200, statements=None):
    """The body; a read (200, a 404 of the store, a marker's 400) ran one statement, a
    request refused before reading none."""
    response = api.get(path, token=token, version=version)
    assert response.status == status, (path, response.body)
    if statements is None:
        statements = int(status in (200, 404) or "marker" in path)
    assert response.statements == statements, path
    return response.json()


def test_list_before_2_53_integer_ids_in_nova_order(hypervisors_api):
    body = _get(hypervisors_api, "/v2.1/os-hypervisors")
    assert body == {"hypervisors": [
        {"id": 1, "hypervisor_hostname": "compute-1.example.org", "state": "up",
         "status": "enabled"},
        {"id": 2, "hypervisor_hostname": "compute-2.example.org", "state": "down",
         "status": "enabled"},
        {"id": 1, "hypervisor_hostname": "compute-9.example.org", "state": "up",
         "status": "disabled"}]}


def test_paging_from_2_33_and_uuids_from_2_53(hypervisors_api):
    first = _get(hypervisors_api, "/v2.1/os-hypervisors?limit=1", "2.33")
    assert [h["id"] for h in first["hypervisors"]] == [1]
    (link,) = first["hypervisors_links"]
    assert parse_qs(urlsplit(link["href"]).query) == {"limit": ["1"], "marker": ["1"]}
    rest = _get(hypervisors_api, "/v2.1/os-hypervisors?marker=1", "2.33")
    assert [h["hypervisor_hostname"] for h in rest["hypervisors"]] == [
        "compute-2.example.org", "compute-9.example.org"]
    page = _get(hypervisors_api, "/v2.1/os-hypervisors/detail?limit=2", "2.53")
    assert [h["id"] for h in page["hypervisors"]] == [UUID["cell1", 1], UUID["cell1", 2]]
    (link,) = page["hypervisors_links"]
    assert link["href"].split("?")[0].endswith("/v2.1/os-hypervisors/detail")
    assert parse_qs(urlsplit(link["href"]).query)["marker"] == [UUID["cell1", 2]]
    last = _get(hypervisors_api, f"/v2.1/os-hypervisors?marker={UUID['cell1', 2]}", "2.53")
    assert [h["id"] for h in last["hypervisors"]] == [UUID["cell2", 1]]
    assert "hypervisors_links" not in last
    missing = _get(hypervisors_api, "/v2.1/os-hypervisors?marker=nope", "2.53", status=400)
    assert missing["badRequest"]["message"] == "marker [nope] not found"


def test_detail_in_each_range(hypervisors_api):
    old = _get(hypervisors_api, "/v2.1/os-hypervisors/detail")["hypervisors"][0]
    assert old["cpu_info"] == NODES[0][1]["cpu_info"] and old["service"] == {
        "id": 101, "host": "compute-1", "disabled_reason": None}
    assert list(old)[:8] == ["id", "hypervisor_hostname", "state", "status",
                             "hypervisor_type", "hypervisor_version", "host_ip", "service"]
    parsed = _get(hypervisors_api, "/v2.1/os-hypervisors/detail", "2.28")["hypervisors"]
    assert parsed[0]["cpu_info"]["model"] == "Cascadelake-Server" and parsed[2]["cpu_info"] == {}
    v253 = _get(hypervisors_api, "/v2.1/os-hypervisors/detail", "2.53")["hypervisors"][2]
    assert v253["service"] == {"id": NODES[3][1]["service_uuid"], "host": "compute-9",
                               "disabled_reason": "maintenance"}
    assert v253["vcpus"] == 64 and v253["running_vms"] == 11
    new = _get(hypervisors_api, "/v2.1/os-hypervisors/detail", "2.88")["hypervisors"][0]
    assert "vcpus" not in new and "cpu_info" not in new and new["uptime"] is None


def test_with_servers_and_hostname_pattern_from_2_53(hypervisors_api):
    body = _get(hypervisors_api, "/v2.1/os-hypervisors?with_servers=true", "2.53")
    one, two, nine = body["hypervisors"]
    assert one["servers"] == [{"name": "instance-00000001", "uuid": SERVERS[0][1]["uuid"]},
                              {"name": "instance-00000002", "uuid": SERVERS[1][1]["uuid"]}]
    assert "servers" not in two and nine["servers"][0]["uuid"] == SERVERS[3][1]["uuid"]
    empty = _get(hypervisors_api, "/v2.1/os-hypervisors/detail?with_servers=1", "2.75")
    assert empty["hypervisors"][1]["servers"] == []
    matched = _get(hypervisors_api,
                   "/v2.1/os-hypervisors?hypervisor_hostname_pattern=compute-9", "2.53")
    assert [h["id"] for h in matched["hypervisors"]] == [UUID["cell2", 1]]
    assert "hypervisors_links" not in matched
    none = _get(hypervisors_api, "/v2.1/os-hypervisors?hypervisor_hostname_pattern=zz",
                "2.53", status=404)
    assert none["itemNotFound"]["message"] == "No hypervisor matching 'zz' could be found."
    paged = _get(hypervisors_api,
                 "/v2.1/os-hypervisors?hypervisor_hostname_pattern=c&limit=1", "2.53",
                 status=400)
    assert paged["badRequest"]["message"] == (       # paging with a pattern: as Nova says it
        "The server could not comply with the request since it is either malformed or "
        "otherwise incorrect.")
    extra = _get(hypervisors_api, "/v2.1/os-hypervisors?foo=1", "2.53", status=400)
    assert "Additional properties are not allowed ('foo' was unexpected)" in \
        extra["badRequest"]["message"]
    assert _get(hypervisors_api, "/v2.1/os-hypervisors?foo=1", "2.52")["hypervisors"]
    bad = _get(hypervisors_api, "/v2.1/os-hypervisors?with_servers=maybe", "2.53",
               status=400)
    assert "with_servers" in bad["badRequest"]["message"]


def test_show_by_integer_id_then_by_uuid(hypervisors_api):
    old = _get(hypervisors_api, "/v2.1/os-hypervisors/1")["hypervisor"]
    assert old["hypervisor_hostname"] == "compute-1.example.org" and old["vcpus"] == 64
    new = _get(hypervisors_api, f"/v2.1/os-hypervisors/{UUID['cell2', 1]}?with_servers=yes",
               "2.53")["hypervisor"]
    assert new["id"] == UUID["cell2", 1] and len(new["servers"]) == 1
    for path, version, status in (("/v2.1/os-hypervisors/x", "2.1", 404),
                                  ("/v2.1/os-hypervisors/3", "2.1", 404),
                                  ("/v2.1/os-hypervisors/77", "2.1", 404),
                                  ("/v2.1/os-hypervisors/1", "2.53", 400),
                                  (f"/v2.1/os-hypervisors/{UUID['cell1', 3]}", "2.53", 404)):
        response = hypervisors_api.get(path, token=ADMIN, version=version)
        assert response.status == status, path
    assert _get(hypervisors_api, "/v2.1/os-hypervisors/x", status=404,
                statements=0) == {"itemNotFound": {
        "code": 404, "message": "Hypervisor with ID 'x' could not be found."}}
    assert _get(hypervisors_api, "/v2.1/os-hypervisors/1", "2.53", status=400) == {
        "badRequest": {"code": 400, "message": "Invalid uuid 1"}}


def test_search_and_servers_routes_before_2_53(hypervisors_api):
    found = _get(hypervisors_api, "/v2.1/os-hypervisors/compute-1/search", "2.52")
    assert found == {"hypervisors": [{"id": 1, "hypervisor_hostname": "compute-1.example.org",
                                      "state": "up", "status": "enabled"}]}
    servers = _get(hypervisors_api, "/v2.1/os-hypervisors/compute/servers")["hypervisors"]
    assert [len(h.get("servers", ())) for h in servers] == [2, 0, 1]
    assert _get(hypervisors_api, "/v2.1/os-hypervisors/nothing/search", status=404) == {
        "itemNotFound": {"code": 404,
                         "message": "No hypervisor matching 'nothing' could be found."}}
    gone = hypervisors_api.get("/v2.1/os-hypervisors/compute-1/search", token=ADMIN,
                               version="2.53")
    assert gone.status == 404


def test_members_are_refused_with_novas_403(hypervisors_api):
    for path, rule in (("/v2.1/os-hypervisors", "list"),
                       ("/v2.1/os-hypervisors/detail", "list-detail"),
                       ("/v2.1/os-hypervisors/1", "show"),
                       ("/v2.1/os-hypervisors/compute/servers", "servers"),
                       ("/v2.1/os-hypervisors/compute/search", "search")):
        body = _get(hypervisors_api, path, token=MEMBER, status=403, statements=0)
        assert body == {"forbidden": {"code": 403, "message": (
            f"Policy doesn't allow os_compute_api:os-hypervisors:{rule} to be performed.")}}


def test_statistics_and_uptime_are_not_replicated(hypervisors_api):
    for path in ("/v2.1/os-hypervisors/statistics", "/v2.1/os-hypervisors/1/uptime"):
        response = hypervisors_api.get(path, token=ADMIN)
        assert response.status == 404
        assert "read replica" in response.json()["itemNotFound"]["message"]


def test_openstack_hypervisor_list(hypervisors_api):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    out = subprocess.run(
        [os.path.join(VENV_BIN, "openstack"), "--os-auth-type", "none", "--os-endpoint",
         f"http://127.0.0.1:{hypervisors_api.port}/v2.1", "--os-identity-api-version", "3",
         "hypervisor", "list", "-f", "value", "-c", "ID", "-c", "Hypervisor Hostname",
         "-c", "State"],
        capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert [line.split() for line in out.stdout.strip().splitlines()] == [
        [UUID["cell1", 1], "compute-1.example.org", "up"],
        [UUID["cell1", 2], "compute-2.example.org", "down"],
        [UUID["cell2", 1], "compute-9.example.org", "up"]]


@pytest.mark.filterwarnings("ignore:::openstack.*")
def test_openstacksdk_hypervisors(hypervisors_api):
    import openstack
    conn = openstack.connection.Connection(
        auth_type="none",
        compute_endpoint_override=f"http://127.0.0.1:{hypervisors_api.port}/v2.1")
    try:
        found = list(conn.compute.hypervisors(details=True))
        assert [h.id for h in found] == [UUID["cell1", 1], UUID["cell1", 2], UUID["cell2", 1]]
        assert found[0].name == "compute-1.example.org" and found[0].state == "up"
        assert found[2].status == "disabled"
        one = conn.compute.get_hypervisor(UUID["cell1", 1])
        assert one.service_details["host"] == "compute-1"
        assert [h.name for h in conn.compute.hypervisors(
            hypervisor_hostname_pattern="compute-9")] == ["compute-9.example.org"]
    finally:
        conn.close()


def test_a_hypervisor_marker_may_be_an_id_after_2_53(hypervisors_api):
    """Nova looks a uuid-like marker up by uuid and any other by id, at any microversion."""
    by_id = hypervisors_api.get("/v2.1/os-hypervisors", token=ADMIN, version="2.33").json()["hypervisors"]
    by_uuid = hypervisors_api.get("/v2.1/os-hypervisors", token=ADMIN, version="2.53").json()["hypervisors"]
    assert len(by_id) >= 2 and [h["hypervisor_hostname"] for h in by_id] == [
        h["hypervisor_hostname"] for h in by_uuid]
    after_id = hypervisors_api.get(f"/v2.1/os-hypervisors?marker={by_id[0]['id']}", token=ADMIN,
                       version="2.53")
    after_uuid = hypervisors_api.get(f"/v2.1/os-hypervisors?marker={by_uuid[0]['id']}", token=ADMIN,
                         version="2.53")
    assert after_id.status == after_uuid.status == 200
    assert after_id.json() == after_uuid.json() == {"hypervisors": by_uuid[1:]}


def test_the_hypervisor_policy_comes_before_paging_with_a_pattern(hypervisors_api):
    path = "/v2.1/os-hypervisors?hypervisor_hostname_pattern=compute&limit=1"
    assert hypervisors_api.get(path, token=MEMBER, version="2.53").status == 403
    assert hypervisors_api.get(path, token=ADMIN, version="2.53").status == 400


def test_an_empty_marker_pages_nothing_with_a_pattern(hypervisors_api):
    path = "/v2.1/os-hypervisors?hypervisor_hostname_pattern=compute&marker="
    assert hypervisors_api.get(path, token=ADMIN, version="2.53").status == 200
