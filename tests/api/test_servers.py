"""Servers over real HTTP: show, list, detail, filters, sorting, pagination, tenancy,
admin-only fields, microversion headers; exactly one SQL statement per read."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from tests.api import entities as E
from tests.api.conftest import ADMIN, OTHER

P = E.PROJECT


def sid(n: int) -> str:
    return E.server(n)["uuid"]


def names(response) -> list[str]:
    return [s["name"] for s in response.json()["servers"]]


def ids(response) -> list[str]:
    return [s["id"] for s in response.json()["servers"]]


LIVE = [n for n in range(30) if n not in (11, 12)]     # not deleted, not soft-deleted


def test_show_own_server(api):
    r = api.get(f"/v2.1/servers/{sid(0)}")
    assert r.status == 200
    assert r.statements == 1
    server = r.json()["server"]
    assert server["id"] == sid(0)
    assert server["name"] == "server-0"
    assert server["status"] == "ACTIVE"
    assert server["tenant_id"] == P
    assert server["created"] == "2026-11-01T04:01:00Z"
    assert server["links"][0] == {"rel": "self",
                                  "href": f"http://127.0.0.1:{api.port}/v2.1/servers/{sid(0)}"}
    assert server["links"][1]["href"] == f"http://127.0.0.1:{api.port}/servers/{sid(0)}"
    assert server["flavor"]["id"] == "1"
    assert server["image"]["id"] == E.IMAGE
    assert server["addresses"]["private"][0]["addr"] == "192.168.1.30"
    assert "OS-EXT-SRV-ATTR:host" not in server
    assert r.headers["x-replica-position"] == "cell1=1234,cell2=877,flavors=6"
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-openstack-request-id"].startswith("req-")
    assert r.headers["x-compute-request-id"] == r.headers["x-openstack-request-id"]


def test_show_with_project_in_url_links_carry_it(api):
    r = api.get(f"/v2.1/{P}/servers/{sid(0)}")
    assert r.status == 200
    links = r.json()["server"]["links"]
    assert links[0]["href"] == f"http://127.0.0.1:{api.port}/v2.1/{P}/servers/{sid(0)}"
    assert links[1]["href"] == f"http://127.0.0.1:{api.port}/{P}/servers/{sid(0)}"


def test_project_in_url_must_match_the_token(api):
    r = api.get(f"/v2.1/{E.OTHER_PROJECT}/servers")
    assert r.status == 400
    assert r.json() == {"badRequest": {"code": 400, "message": (
        f"Malformed request URL: URL's project_id '{E.OTHER_PROJECT}' doesn't match "
        f"Context's project_id '{P}'")}}


def test_forwarded_headers_shape_links(api):
    r = api.get(f"/v2.1/servers/{sid(0)}", headers={"X-Forwarded-Proto": "https",
                                                   "X-Forwarded-Host": "api.example.com"})
    assert r.json()["server"]["links"][0]["href"] == (
        f"https://api.example.com/v2.1/servers/{sid(0)}")


def test_other_projects_server_is_not_found(api):
    r = api.get(f"/v2.1/servers/{sid(100)}")
    assert r.status == 404
    assert r.json() == {"itemNotFound": {"code": 404,
                                         "message": f"Instance {sid(100)} could not be found."}}
    assert r.statements == 1
    assert api.get(f"/v2.1/servers/{sid(100)}", token=OTHER).status == 200
    assert api.get(f"/v2.1/servers/{sid(100)}", token=ADMIN).status == 200


@pytest.mark.parametrize("bad", ["not-a-uuid", "12345", "0e44cc9c-e052-415d-afbf"])
def test_show_non_uuid_is_not_found(api, bad):
    r = api.get(f"/v2.1/servers/{bad}")
    assert r.status == 404
    assert r.json()["itemNotFound"]["message"] == f"Instance {bad} could not be found."


def test_show_unknown_and_deleted_are_not_found(api):
    unknown = "11111111-2222-3333-4444-555555555555"
    assert api.get(f"/v2.1/servers/{unknown}").status == 404
    assert api.get(f"/v2.1/servers/{sid(11)}").status == 404   # deleted
    assert api.get(f"/v2.1/servers/{sid(12)}").status == 200   # soft-deleted still shows


@pytest.mark.parametrize("spelling", [str.upper, lambda u: u.replace("-", ""),
                                      lambda u: "{" + u + "}"], ids=["upper", "bare", "braces"])
def test_other_uuid_spellings_are_not_found(api, spelling):
    """nova-api finds a server by its uuid as stored (lowercase, hyphens), on SQLite and
    on MariaDB alike (tests/realnova: test_random_server_paths_equal_nova_api)."""
    other = spelling(sid(0))
    for tail, message in (("", "could not be found."), ("/metadata", "could not be found."),
                          ("/ips", "could not be found."),
                          ("/os-instance-actions", "could not be found."),
                          ("/tags", "has no mapping to a cell.")):
        r = api.get(f"/v2.1/servers/{other}{tail}", version="2.26")
        assert r.status == 404, (tail, r.body)
        assert r.json()["itemNotFound"]["message"] == f"Instance {other} {message}"


def test_admin_only_fields(api):
    member = api.get(f"/v2.1/servers/{sid(0)}", version="2.16").json()["server"]
    admin = api.get(f"/v2.1/servers/{sid(0)}", token=ADMIN, version="2.16").json()["server"]
    assert "host_status" not in member and admin["host_status"] == "UP"
    assert "OS-EXT-SRV-ATTR:host" not in member
    assert admin["OS-EXT-SRV-ATTR:host"] == "compute-1"
    assert admin["OS-EXT-SRV-ATTR:hypervisor_hostname"] == "fake-mini"
    assert admin["OS-EXT-SRV-ATTR:instance_name"] == "instance-00000001"
    assert admin["OS-EXT-SRV-ATTR:reservation_id"] == "r-00000000"
    assert admin["hostId"] == member["hostId"] != ""


def test_hostname_for_members_from_2_90(api):
    before = api.get(f"/v2.1/servers/{sid(0)}", version="2.89").json()["server"]
    after = api.get(f"/v2.1/servers/{sid(0)}", version="2.90").json()["server"]
    assert "OS-EXT-SRV-ATTR:hostname" not in before
    assert after["OS-EXT-SRV-ATTR:hostname"] == "server-0"


def test_server_groups_on_show_only(api):
    show = api.get(f"/v2.1/servers/{sid(0)}", version="2.71").json()["server"]
    detail = api.get("/v2.1/servers/detail?limit=1", version="2.71").json()["servers"][0]
    assert show["server_groups"] == []
    assert "server_groups" not in detail
    assert "server_groups" not in api.get(f"/v2.1/servers/{sid(0)}",
                                          version="2.70").json()["server"]


def test_microversion_fields(api):
    def show(version):
        return api.get(f"/v2.1/servers/{sid(8)}", version=version).json()["server"]
    assert "delete_on_termination" not in show("2.1")["os-extended-volumes:volumes_attached"][0]
    assert show("2.3")["os-extended-volumes:volumes_attached"][0]["delete_on_termination"] is False
    assert "locked" not in show("2.8") and show("2.9")["locked"] is True
    assert "description" not in show("2.18") and show("2.19")["description"] == "description 8"
    assert "tags" not in show("2.25") and show("2.26")["tags"] == []
    assert show("2.46")["flavor"]["id"] == "1"
    assert show("2.47")["flavor"] == {"vcpus": 1, "ram": 512, "disk": 1, "ephemeral": 0,
                                      "swap": 0, "original_name": "m1.tiny", "extra_specs": {}}
    assert "trusted_image_certificates" not in show("2.62")
    assert show("2.63")["trusted_image_certificates"] is None
    assert "locked_reason" not in show("2.72") and show("2.73")["locked_reason"] == "maintenance"
    assert "pinned_availability_zone" not in show("2.95")
    assert show("2.96")["pinned_availability_zone"] == "us-west"
    assert "properties" not in show("2.97")["image"]
    assert show("2.98")["image"]["properties"] == {"architecture": "x86_64",
                                                   "auto_disk_config": "True"}
    assert "scheduler_hints" not in show("2.99")
    assert show("2.100")["scheduler_hints"] == {
        "same_host": ["48e6a9f6-30af-47e0-bc04-acaed113bb4e"]}
    assert show("latest")["scheduler_hints"]


def test_states_and_faults(api):
    error = api.get(f"/v2.1/servers/{sid(7)}").json()["server"]
    assert error["status"] == "ERROR"
    assert error["fault"] == {"code": 500, "created": "2026-11-03T04:01:00Z",
                              "message": "boom"}                 # no details for members
    assert "progress" not in error
    admin = api.get(f"/v2.1/servers/{sid(7)}", token=ADMIN).json()["server"]
    assert admin["fault"]["details"] == "Traceback..."
    stopped = api.get(f"/v2.1/servers/{sid(8)}").json()["server"]
    assert stopped["status"] == "SHUTOFF" and stopped["OS-EXT-STS:power_state"] == 4
    assert "fault" not in stopped
    building = api.get(f"/v2.1/servers/{sid(9)}").json()["server"]
    assert building["status"] == "BUILD"
    assert building["addresses"] == {}
    assert building["hostId"] == ""
    assert building["progress"] == 0
    assert api.get(f"/v2.1/servers/{sid(10)}").json()["server"]["image"] == ""


def test_addresses_with_floating_and_v6(api):
    server = api.get(f"/v2.1/servers/{sid(13)}").json()["server"]
    assert server["addresses"] == {"private": [
        {"version": 4, "addr": "10.0.0.13", "OS-EXT-IPS:type": "fixed",
         "OS-EXT-IPS-MAC:mac_addr": "00:0c:29:0d:11:74"},
        {"version": 6, "addr": "fd00::13", "OS-EXT-IPS:type": "fixed",
         "OS-EXT-IPS-MAC:mac_addr": "00:0c:29:0d:11:74"},
        {"version": 4, "addr": "172.24.4.13", "OS-EXT-IPS:type": "floating",
         "OS-EXT-IPS-MAC:mac_addr": "00:0c:29:0d:11:74"}]}


def test_list_is_own_live_servers_newest_first(api):
    r = api.get("/v2.1/servers")
    assert r.status == 200 and r.statements <= 1
    assert ids(r) == [sid(n) for n in sorted(LIVE, reverse=True)]
    assert "servers_links" not in r.json()
    entry = r.json()["servers"][0]
    assert sorted(entry) == ["id", "links", "name"]
    detail = api.get("/v2.1/servers/detail")
    assert detail.statements <= 1
    assert ids(detail) == ids(r)


def test_all_tenants_is_for_admins(api):
    admin = api.get("/v2.1/servers?all_tenants=1", token=ADMIN)
    assert len(ids(admin)) == len(LIVE) + 5
    assert len(ids(api.get("/v2.1/servers", token=ADMIN))) == len(LIVE)
    r = api.get("/v2.1/servers/detail?all_tenants=true")
    assert r.status == 403
    assert r.json() == {"forbidden": {"code": 403, "message": (
        "Policy doesn't allow os_compute_api:servers:detail:get_all_tenants to be performed.")}}
    assert api.get("/v2.1/servers?all_tenants=0").status == 200
    narrowed = api.get(f"/v2.1/servers?all_tenants=1&tenant_id={E.OTHER_PROJECT}", token=ADMIN)
    assert sorted(ids(narrowed)) == sorted(sid(n) for n in range(100, 105))


def test_pagination_follows_next_links(api):
    seen, path = [], "/v2.1/servers/detail?limit=6"
    pages = 0
    while path:
        r = api.get(path)
        assert r.status == 200 and r.statements <= 1
        body = r.json()
        seen += [s["id"] for s in body["servers"]]
        pages += 1
        links = body.get("servers_links")
        if links:
            assert links[0]["rel"] == "next"
            url = urlsplit(links[0]["href"])
            assert url.path == "/v2.1/servers/detail"
            query = parse_qs(url.query)
            assert query["limit"] == ["6"] and query["marker"] == [seen[-1]]
            path = f"{url.path}?{url.query}"
        else:
            path = None
    assert seen == [sid(n) for n in sorted(LIVE, reverse=True)]
    assert pages == 5        # 28 servers: 6+6+6+6+4


def test_max_limit_caps_a_page(tmp_path, replica_file):
    from tests.api.conftest import start_server, stop_server
    from tests.conftest import free_port
    proc, api = start_server(replica_file, free_port(), env={"MAX_LIMIT": "4"})
    try:
        r = api.get("/v2.1/servers?limit=100")
        assert len(ids(r)) == 4
        assert "limit=100" in r.json()["servers_links"][0]["href"]
        r = api.get("/v2.1/servers")
        assert len(ids(r)) == 4 and "servers_links" in r.json()
    finally:
        stop_server(proc)


def test_unknown_marker(api):
    r = api.get("/v2.1/servers?marker=nope")
    assert r.status == 400
    assert r.json() == {"badRequest": {"code": 400, "message": "marker [nope] not found"}}
    assert r.statements <= 1


def test_changes_since_includes_deleted(api):
    r = api.get("/v2.1/servers/detail?changes-since=2026-11-02T00:00:00Z")
    servers = {s["id"]: s for s in r.json()["servers"]}
    assert servers[sid(11)]["status"] == "DELETED"
    assert sid(12) in servers
    later = api.get("/v2.1/servers?changes-since=2026-11-03T00:00:00Z")
    assert ids(later) == [sid(11)]
    window = api.get("/v2.1/servers?changes-since=2026-11-02T04:01:05%2B00:00"
                     "&changes-before=2026-11-02T04:01:06.999999Z", version="2.66")
    assert ids(window) == [sid(6), sid(5)]


@pytest.mark.parametrize("query,version,expected", [
    ("name=^server-2[0-9]$", "2.1", [n for n in LIVE if 20 <= n <= 29]),
    ("name=server-2", "2.1", [n for n in LIVE if n == 2 or 20 <= n <= 29]),
    ("name=db.primary", "2.1", [14]),
    ("status=SHUTOFF", "2.1", [8]),
    ("status=error", "2.1", [7]),
    ("status=ACTIVE&status=BUILD", "2.1", [n for n in LIVE if n not in (7, 8)]),
    ("flavor=2", "2.1", [14]),
    ("image=" + E.IMAGE, "2.1", [n for n in LIVE if n != 10]),
    ("ip=10.0.0.13", "2.1", [13]),
    # Neutron's ip_address_substr over the ports' fixed addresses: a floating address
    # is no port's; ip and ip6 each ask Neutron, and the servers of either answer come
    ("ip=172.24.4", "2.1", []),
    ("ip6=fd00::13", "2.5", [13]),
    ("ip=10.0.0.13&ip6=no-such", "2.5", [13]),
    ("ip=no-such&ip6=fd00::13", "2.5", [13]),
    ("tags=web,prod", "2.26", [n for n in LIVE if n % 3 == 0]),
    ("tags-any=prod", "2.26", [n for n in LIVE if n % 3 == 0]),
    ("not-tags=web,prod", "2.26", [n for n in LIVE if n % 3 != 0]),
    ("not-tags-any=web", "2.26", [n for n in LIVE if n % 3 == 2]),
    ("tags=web", "2.25", LIVE),                      # before 2.26: ignored
    ("locked=true", "2.73", [8]),
    ("locked=False", "2.73", [n for n in LIVE if n != 8]),
    ("reservation_id=r-00000003", "2.1", [3]),
    ("key_name=ops-key", "2.83", [14]),
    ("key_name=ops-key", "2.82", LIVE),              # not a member filter before 2.83
    ("hostname=server-29", "2.90", [29]),
    ("availability_zone=nowhere", "2.83", []),
    ("foo=bar", "2.74", LIVE),                       # unknown filters ignored before 2.75
    ("host=compute-1", "2.1", LIVE),                 # admin-only filter: ignored
])
def test_member_filters(api, query, version, expected):
    r = api.get(f"/v2.1/servers?{query}", version=version)
    assert r.status == 200, r.body
    assert r.statements <= 1
    assert sorted(ids(r)) == sorted(sid(n) for n in expected)


@pytest.mark.parametrize("query,expected", [
    ("host=compute-1", [n for n in LIVE if n != 9]),
    ("node=fake", [n for n in LIVE if n != 9]),
    ("deleted=true", [11, 12]),
    ("deleted=true&soft_deleted=false", [11]),
    ("status=DELETED", [11]),
    ("user_id=fake", LIVE),
    ("uuid=" + E.server(3)["uuid"], [3]),
    ("_hidden=x", None),
    ("metadata=x", None),
])
def test_admin_filters(api, query, expected):
    r = api.get(f"/v2.1/servers?{query}", token=ADMIN)
    if expected is None:
        assert r.status == 400
        name = query.split("=")[0]
        assert r.json()["badRequest"]["message"] == f"Invalid filter field: {name}."
        return
    assert r.status == 200, r.body
    assert sorted(ids(r)) == sorted(sid(n) for n in expected)


def test_members_may_not_list_deleted(api):
    r = api.get("/v2.1/servers?status=DELETED")
    assert r.status == 403
    assert r.json()["forbidden"]["message"] == "Only administrators may list deleted instances"


def test_sorting(api):
    r = api.get("/v2.1/servers?sort_key=display_name&sort_dir=asc&limit=3")
    assert names(r) == ["db.primary", "server-0", "server-1"]
    r = api.get("/v2.1/servers?sort_key=display_name&sort_dir=asc&limit=3&marker=" + sid(1))
    assert names(r) == ["server-10", "server-13", "server-15"]
    r = api.get("/v2.1/servers?sort_key=vm_state&sort_key=display_name&sort_dir=asc"
                "&sort_dir=desc&limit=2")
    assert names(r) == ["server-6", "server-5"]     # active first, names descending
    r = api.get("/v2.1/servers?sort_key=vcpus")       # ignored before 2.75
    assert r.status == 200 and len(ids(r)) == len(LIVE)
    r = api.get("/v2.1/servers?sort_key=host")
    assert r.status == 403
    assert r.json()["forbidden"]["message"] == "Only administrators can sort servers by host"
    assert api.get("/v2.1/servers?sort_key=host", token=ADMIN).status == 200
    r = api.get("/v2.1/servers?sort_key=locked&sort_dir=desc&limit=1", version="2.73")
    assert names(r) == ["server-8"]


def test_sort_with_nulls_pages_without_loss(api):
    # key_name is NULL for all but one server: keyset pagination must still cover all.
    seen, marker = [], None
    for _ in range(20):
        path = "/v2.1/servers?sort_key=key_name&sort_dir=asc&limit=5"
        r = api.get(path + (f"&marker={marker}" if marker else ""))
        page = ids(r)
        seen += page
        if "servers_links" not in r.json():
            break
        marker = page[-1]
    assert sorted(seen) == sorted(sid(n) for n in LIVE)
    assert len(seen) == len(set(seen))
    assert seen[-1] == sid(14)      # the only key_name, last ascending (NULLs first)


def test_microversion_headers(api):
    r = api.get("/v2.1/servers?limit=1", version="2.53")
    assert r.headers["openstack-api-version"] == "compute 2.53"
    assert r.headers["x-openstack-nova-api-version"] == "2.53"
    assert "OpenStack-API-Version" in r.headers["vary"]
    legacy = api.get("/v2.1/servers?limit=1",
                     headers={"X-OpenStack-Nova-API-Version": "2.12"})
    assert legacy.headers["openstack-api-version"] == "compute 2.12"
    latest = api.get("/v2.1/servers?limit=1", version="latest")
    assert latest.headers["openstack-api-version"] == "compute 2.104"
    none = api.get("/v2.1/servers?limit=1")
    assert none.headers["openstack-api-version"] == "compute 2.1"


def test_head_has_no_body(api):
    r = api.request("HEAD", f"/v2.1/servers/{sid(0)}")
    assert r.status == 200 and r.body == b""


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize("path", ["/v2.1/servers", f"/v2.1/servers/{sid(0)}",
                                  f"/v2.1/servers/{sid(0)}/action", "/v2.1/flavors",
                                  f"/v2.1/{P}/servers"])
def test_writes_are_refused(api, method, path):
    r = api.request(method, path)
    assert r.status == 405
    assert r.headers["allow"] == "GET, HEAD"
    assert "read-only" in r.json()["badMethod"]["message"]
    assert r.json()["badMethod"]["code"] == 405


def test_default_identity_without_token(api):
    # noauth without a token: the configured default (admin:demo) -- project demo.
    r = api.get("/v2.1/servers", token=None)
    assert r.status == 200 and ids(r) == []
    assert api.get(f"/v2.1/servers/{sid(0)}", token=None).status == 200   # admin


def test_usage_timestamps_as_nova_prints_them(api):
    """OS-SRV-USG:launched_at / terminated_at are the serializer's microsecond stamps,
    '.000000' included (whole-second stamps, as on MariaDB); created / updated are
    isotime's seconds with 'Z'."""
    def show(n):
        return api.get(f"/v2.1/servers/{sid(n)}", version="2.104").json()["server"]
    assert show(0)["OS-SRV-USG:launched_at"] == "2026-11-01T04:01:00.000000"
    assert show(15)["OS-SRV-USG:launched_at"] == "2026-11-01T04:01:15.000000"
    assert show(1)["OS-SRV-USG:launched_at"] == "2026-11-01T04:01:01.880302"
    assert show(1)["OS-SRV-USG:terminated_at"] is None
    assert show(1)["created"] == "2026-11-01T04:01:01Z"
    assert show(1)["updated"] == "2026-11-02T04:01:01Z"
    deleted = api.get("/v2.1/servers/detail?changes-since=2026-11-01T00:00:00Z&deleted=true",
                      token=ADMIN, version="2.1").json()["servers"]
    (eleven,) = [s for s in deleted if s["id"] == sid(11)]
    assert eleven["OS-SRV-USG:terminated_at"] == "2026-11-04T04:01:00.000000"
