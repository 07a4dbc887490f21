"""Pass-through to a real nova-api (Nova 34's WSGI app under gunicorn, databases made by
nova-manage): what the appliance answers for a request it passes is what nova-api
answers when called directly, status and body; a reader's write is refused by nova-api's
own policy, through the appliance too."""

from __future__ import annotations

import http.client
import json

import pytest

from tests.conftest import free_port
from tests.edge.conftest import serve
from tests.realnova.nova_api import neutron_stub_fixture, nova_api_fixture
from tests.realnova.novadb import nova_sqlite_fixture

nova_db = nova_sqlite_fixture(scope="module")
neutron = neutron_stub_fixture(scope="module")
nova_api = nova_api_fixture("nova_db", "neutron", scope="module")

# Headers that differ between two answers to the same request.
PER_ANSWER = {"date", "x-openstack-request-id", "x-compute-request-id", "connection",
              "server", "keep-alive"}


@pytest.fixture(scope="module")
def appliance(nova_api, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nova-upstream")
    port = free_port()
    running = serve(tmp, "appliance", port, str(tmp / "replica.db"), workers=1,
                    upstream_url=nova_api.url)
    try:
        yield running
    finally:
        running.stop()


def call(port, method, path, token, body=None, version="2.90"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"X-Auth-Token": token, "OpenStack-API-Version": f"compute {version}"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    try:
        conn.request(method, path, body=data, headers=headers)
        r = conn.getresponse()
        raw = r.read()
        kept = {k.lower(): v for k, v in r.getheaders() if k.lower() not in PER_ANSWER}
        return r.status, kept, json.loads(raw) if raw else None
    finally:
        conn.close()


def both(nova_api, appliance, method, path, token, body=None):
    direct = call(nova_api.port, method, path, token, body)
    passed = call(appliance.port, method, path, token, body)
    return direct, passed


@pytest.fixture(scope="module")
def cloud(nova_db, neutron):
    """A flavor, a compute host, a key pair and an active server of project p1."""
    with nova_db.writer() as nova:
        nova.create_flavor(name="m1.tiny", vcpus=1, memory_mb=512, root_gb=1, flavorid="1")
        nova.create_compute(host="compute-1", az="zone-1")
        nova.create_keypair(user_id="u1", name="edge-key")
        server = nova.build_server(user_id="u1", project_id="p1", flavor="1", name="vm-1")
        neutron.add_server(server)
    return server


def test_keypair_list_passes_through(cloud, nova_api, appliance):
    direct, passed = both(nova_api, appliance, "GET", "/v2.1/os-keypairs", "u1:p1")
    assert direct[0] == 200 and [k["keypair"]["name"] for k in direct[2]["keypairs"]] \
        == ["edge-key"]
    assert passed == direct


def test_server_create_passes_through(cloud, nova_api, appliance):
    """nova-api's answer to a create (this deployment has no image service: nova-api
    answers that in its own words): the same through the appliance."""
    body = {"server": {"name": "edge-vm", "flavorRef": "1", "networks": "none",
                       "imageRef": "70a599e0-31e7-49b7-b260-868f441e862b"}}
    direct, passed = both(nova_api, appliance, "POST", "/v2.1/servers", "u1:p1", body)
    print(f"\nnova-api answered the create: {direct[0]} {json.dumps(direct[2])[:300]}")
    assert passed == direct


def test_a_reader_cannot_pass_a_write_through(cloud, nova_api, appliance):
    path = f"/v2.1/servers/{cloud['uuid']}/action"
    direct, passed = both(nova_api, appliance, "POST", path, "u2:p1:reader",
                          {"os-stop": None})
    assert direct[0] == 403
    assert "os_compute_api:servers:stop" in direct[2]["forbidden"]["message"]
    assert passed == direct


def test_server_event_list_passes_through(cloud, nova_api, appliance):
    path = f"/v2.1/servers/{cloud['uuid']}/os-instance-actions"
    direct, passed = both(nova_api, appliance, "GET", path, "u1:p1")
    assert direct[0] == 200 and "instanceActions" in direct[2]
    assert passed == direct


def test_pass_through_overhead(cloud, nova_api, appliance):
    """Printed, not asserted: p50 of GET /os-keypairs from nova-api directly and through
    the appliance, interleaved, same run; on fresh connections and on one kept-alive
    connection per target."""
    import time
    headers = {"X-Auth-Token": "u1:p1"}
    for mode in ("fresh connection each", "kept-alive connection"):
        timings = {"direct": [], "through": []}
        kept = {name: http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                for name, port in (("direct", nova_api.port), ("through", appliance.port))}
        for _ in range(60):
            for name, port in (("direct", nova_api.port), ("through", appliance.port)):
                conn = (http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                        if mode.startswith("fresh") else kept[name])
                started = time.perf_counter()
                conn.request("GET", "/v2.1/os-keypairs", headers=headers)
                response = conn.getresponse()
                response.read()
                timings[name].append(time.perf_counter() - started)
                assert response.status == 200
                if mode.startswith("fresh"):
                    conn.close()
        for conn in kept.values():
            conn.close()
        p50 = {name: sorted(values)[len(values) // 2] * 1000
               for name, values in timings.items()}
        print(f"\nGET /v2.1/os-keypairs, {mode}, p50: nova-api directly "
              f"{p50['direct']:.2f} ms, through the appliance {p50['through']:.2f} ms "
              f"(+{p50['through'] - p50['direct']:.2f} ms)")


def _without_request_time(answer):
    """Status and body without what depends on the moment of the request (Nova ends the
    period at the request's time when it asks for a later end: each server's hours and
    uptime, the totals and ``stop`` differ between two requests)."""
    status, _headers, body = answer
    for usage in ([body.get("tenant_usage")] if isinstance(body, dict)
                  and "tenant_usage" in body else (body or {}).get("tenant_usages", [])):
        for name in [k for k in usage if k.startswith("total_") or k == "stop"]:
            del usage[name]
        for server in usage.get("server_usages", []):
            server.pop("uptime", None)
            server.pop("hours", None)
    return status, body


def test_usage_passes_through(cloud, nova_api, appliance):
    """Simple tenant usage is not replicated (docs/architecture.md says why): the
    appliance passes it to nova-api, for an admin's list and a project's own usage."""
    period = "start=2020-01-01T00:00:00&end=2099-01-01T00:00:00"
    for path, token in ((f"/v2.1/os-simple-tenant-usage?{period}&detailed=1",
                         "admin:p1:admin"),
                        (f"/v2.1/os-simple-tenant-usage/p1?{period}", "u1:p1")):
        direct, passed = both(nova_api, appliance, "GET", path, token)
        assert direct[0] == 200, direct
        assert _without_request_time(passed) == _without_request_time(direct)
    usages = direct[2]["tenant_usage"]["server_usages"]
    assert [u["instance_id"] for u in usages] == [cloud["uuid"]]


@pytest.mark.filterwarnings("ignore:::openstack.*")
def test_openstacksdk_usages_through_the_appliance(cloud, nova_api, appliance):
    import datetime

    import openstack
    url = f"http://127.0.0.1:{appliance.port}/v2.1"
    conn = openstack.connection.Connection(
        auth_type="admin_token", auth={"endpoint": url, "token": "admin:p1:admin"},
        compute_endpoint_override=url)
    try:
        usages = list(conn.compute.usages(start=datetime.datetime(2020, 1, 1),
                                          end=datetime.datetime(2099, 1, 1), detailed=1))
    finally:
        conn.close()
    assert [(u.project_id, len(u.server_usages)) for u in usages] == [("p1", 1)]
