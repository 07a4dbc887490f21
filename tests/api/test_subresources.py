"""Sub-resources over real HTTP: flavor extra specs, server tags, metadata and ips, each
one statement, tenancy as their parent's show, read-only."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.api import entities as E
from tests.api.conftest import ADMIN, MEMBER, OTHER, start_server, stop_server
from tests.conftest import VENV_BIN, free_port

PROJECT_PATH = f"/v2.1/{E.PROJECT}"
TAGGED = E.server(0)["uuid"]          # tags ["web", "prod"]
UNTAGGED = E.server(2)["uuid"]        # no tags
NETWORKED = E.server(13)["uuid"]      # fixed, floating and v6 addresses
BUILDING = E.server(9)["uuid"]
DELETED = E.server(11)["uuid"]
THEIRS = E.server(100)["uuid"]        # OTHER_PROJECT's
MISSING = "0e44cc9c-e052-415d-afbf-469b0dffffff"


def fault(r) -> tuple[int, str]:
    assert r.headers["content-type"] == "application/json"
    (body,) = r.json().values()
    return body["code"], body["message"]


# -- flavor extra specs -----------------------------------------------------------------

@pytest.mark.parametrize("prefix", ["/v2.1", PROJECT_PATH])
def test_extra_specs_index_and_show(api, prefix):
    r = api.get(f"{prefix}/flavors/2/os-extra_specs")
    assert r.status == 200 and r.statements == 1, r.body
    assert r.json() == {"extra_specs": {"hw:cpu_policy": "shared"}}
    r = api.get(f"{prefix}/flavors/2/os-extra_specs/hw:cpu_policy")
    assert r.status == 200 and r.statements == 1
    assert r.json() == {"hw:cpu_policy": "shared"}
    assert r.headers["openstack-api-version"] == "compute 2.1"


def test_extra_specs_match_flavor_show(api):
    shown = api.get("/v2.1/flavors/3", version="2.61").json()["flavor"]["extra_specs"]
    assert api.get("/v2.1/flavors/3/os-extra_specs").json()["extra_specs"] == shown


def test_extra_specs_not_found(api):
    r = api.get("/v2.1/flavors/nope/os-extra_specs")
    assert r.status == 404 and r.statements == 1
    assert fault(r) == (404, "Flavor nope could not be found.")
    assert fault(api.get("/v2.1/flavors/nope/os-extra_specs/hw:cpu_policy")) == (
        404, "Flavor nope could not be found.")
    r = api.get("/v2.1/flavors/2/os-extra_specs/hw:mem_page_size")
    assert r.status == 404 and r.statements == 1
    assert fault(r) == (404, "Flavor 2 has no extra specs with key hw:mem_page_size.")
    assert api.get("/v2.1/flavors/2/os-extra_specs/a/b").status == 404
    assert api.get("/v2.1/flavors/2/other").status == 404


def test_extra_specs_private_flavor_tenancy(api):
    assert api.get("/v2.1/flavors/5/os-extra_specs").status == 200     # our private one
    r = api.get("/v2.1/flavors/6/os-extra_specs")                       # theirs
    assert fault(r) == (404, "Flavor 6 could not be found.")
    assert api.get("/v2.1/flavors/6/os-extra_specs/hw:cpu_policy").status == 404
    assert api.get("/v2.1/flavors/6/os-extra_specs", token=OTHER).status == 200
    assert api.get("/v2.1/flavors/6/os-extra_specs", token=ADMIN).status == 200
    assert api.get("/v2.1/flavors/4/os-extra_specs").status == 200     # disabled shows


def test_extra_specs_head(api):
    r = api.request("HEAD", "/v2.1/flavors/2/os-extra_specs")
    assert r.status == 200 and r.body == b""


# -- server tags ---------------------------------------------------------------------------

@pytest.mark.parametrize("prefix", ["/v2.1", PROJECT_PATH])
def test_tags(api, prefix):
    r = api.get(f"{prefix}/servers/{TAGGED}/tags", version="2.26")
    assert r.status == 200 and r.statements == 1
    assert r.json() == {"tags": ["web", "prod"]}
    assert api.get(f"{prefix}/servers/{UNTAGGED}/tags", version="2.26").json() == {"tags": []}
    r = api.get(f"{prefix}/servers/{TAGGED}/tags/web", version="2.26")
    assert r.status == 204 and r.body == b"" and r.statements == 1
    r = api.get(f"{prefix}/servers/{TAGGED}/tags/db", version="2.26")
    assert r.status == 404 and r.statements == 1
    assert fault(r) == (404, f"Server {TAGGED} has no tag 'db'")


def test_tags_need_226(api):
    for path in (f"/v2.1/servers/{TAGGED}/tags", f"/v2.1/servers/{TAGGED}/tags/web"):
        r = api.get(path, version="2.25")
        assert fault(r) == (404, "The resource could not be found.")
        assert api.get(path).status == 404
        assert api.get(path, version="latest").status in (200, 204)


# -- server metadata ----------------------------------------------------------------------

@pytest.mark.parametrize("prefix", ["/v2.1", PROJECT_PATH])
def test_metadata(api, prefix):
    r = api.get(f"{prefix}/servers/{TAGGED}/metadata")
    assert r.status == 200 and r.statements == 1
    assert r.json() == {"metadata": {"My Server Name": "Apache1"}}
    r = api.get(f"{prefix}/servers/{TAGGED}/metadata/My%20Server%20Name")
    assert r.status == 200 and r.statements == 1
    assert r.json() == {"meta": {"My Server Name": "Apache1"}}
    r = api.get(f"{prefix}/servers/{TAGGED}/metadata/other")
    assert r.status == 404 and r.statements == 1
    assert fault(r) == (404, "Metadata item was not found")


# -- server ips ---------------------------------------------------------------------------

NETWORKED_IPS = [{"version": 4, "addr": "10.0.0.13"}, {"version": 6, "addr": "fd00::13"},
                 {"version": 4, "addr": "172.24.4.13"}]


@pytest.mark.parametrize("prefix", ["/v2.1", PROJECT_PATH])
def test_ips(api, prefix):
    r = api.get(f"{prefix}/servers/{NETWORKED}/ips")
    assert r.status == 200 and r.statements == 1
    # Nova's ips view: version and addr only, fixed ones first, then floating ones.
    assert r.json() == {"addresses": {"private": NETWORKED_IPS}}
    r = api.get(f"{prefix}/servers/{NETWORKED}/ips/private")
    assert r.status == 200 and r.statements == 1
    assert r.json() == {"private": NETWORKED_IPS}
    r = api.get(f"{prefix}/servers/{NETWORKED}/ips/public")
    assert r.status == 404 and r.statements == 1
    assert fault(r) == (404, "Instance is not a member of specified network")


def test_ips_of_a_building_server_are_listed_though_its_server_view_hides_them(api):
    # Nova's ips controller reads the network info directly; only the server view
    # hides the addresses of a building server.
    assert api.get(f"/v2.1/servers/{BUILDING}").json()["server"]["addresses"] == {}
    expected = [{"version": 4, "addr": "192.168.1.30"}]
    r = api.get(f"/v2.1/servers/{BUILDING}/ips")
    assert r.status == 200 and r.statements == 1
    assert r.json() == {"addresses": {"private": expected}}
    r = api.get(f"/v2.1/servers/{BUILDING}/ips/private")
    assert r.status == 200 and r.json() == {"private": expected}
    assert api.get(f"/v2.1/servers/{BUILDING}/ips/public").status == 404


def test_ips_agree_with_server_show(api):
    shown = api.get(f"/v2.1/servers/{NETWORKED}").json()["server"]["addresses"]
    ips = api.get(f"/v2.1/servers/{NETWORKED}/ips").json()["addresses"]
    assert ips == {label: [{"version": a["version"], "addr": a["addr"]} for a in entries]
                   for label, entries in shown.items()}


# -- tenancy, missing servers, writes ------------------------------------------------------

SERVER_SUBPATHS = ["tags", "tags/web", "metadata", "metadata/My%20Server%20Name", "ips",
                   "ips/private"]


@pytest.mark.parametrize("sub", SERVER_SUBPATHS)
def test_server_subresource_not_found(api, sub):
    # nova-api finds tags through the server's cell mapping: a server it never had is
    # "no mapping", one that is deleted or another project's "not found"
    never = "has no mapping to a cell." if sub.startswith("tags") else "could not be found."
    for server in (MISSING, THEIRS, DELETED):
        r = api.get(f"/v2.1/servers/{server}/{sub}", version="2.26")
        assert r.status == 404 and r.statements == 1, (server, r.body)
        said = never if server == MISSING else "could not be found."
        assert fault(r) == (404, f"Instance {server} {said}")
    r = api.get(f"/v2.1/servers/not-a-uuid/{sub}", version="2.26")
    assert fault(r) == (404, f"Instance not-a-uuid {never}")
    assert api.get(f"/v2.1/servers/{THEIRS}/{sub}", version="2.26", token=OTHER).status in (
        200, 204, 404)
    r = api.get(f"/v2.1/servers/{THEIRS}/{sub.split('/')[0]}", version="2.26", token=ADMIN)
    assert r.status == 200


def test_other_project_path_is_refused(api):
    r = api.get(f"/v2.1/{E.OTHER_PROJECT}/servers/{TAGGED}/metadata")
    assert r.status == 400


def test_unknown_server_subresource(api):
    assert api.get(f"/v2.1/servers/{TAGGED}/diagnostics").status == 404
    assert api.get(f"/v2.1/servers/{TAGGED}/metadata/a/b").status == 404


@pytest.mark.parametrize("method,path", [
    ("PUT", "/v2.1/flavors/2/os-extra_specs/hw:cpu_policy"),
    ("POST", "/v2.1/flavors/2/os-extra_specs"),
    ("DELETE", "/v2.1/flavors/2/os-extra_specs/hw:cpu_policy"),
    ("PUT", f"/v2.1/servers/{TAGGED}/tags/db"),
    ("PUT", f"/v2.1/servers/{TAGGED}/tags"),
    ("DELETE", f"/v2.1/servers/{TAGGED}/tags"),
    ("POST", f"/v2.1/servers/{TAGGED}/metadata"),
    ("PUT", f"{PROJECT_PATH}/servers/{TAGGED}/metadata/k"),
    ("DELETE", f"/v2.1/servers/{TAGGED}/metadata/My%20Server%20Name"),
])
def test_writes_are_read_only(api, method, path):
    r = api.request(method, path, version="2.26")
    assert r.status == 405 and r.headers["allow"] == "GET, HEAD"
    assert "read-only replica" in fault(r)[1]


def test_non_ascii_keys(tmp_path):
    """As nova-api: a key is looked up as WSGI gives the path (its bytes as latin-1, not
    decoded as UTF-8), so a key beyond ASCII is not found; ASCII ones are."""
    path = str(tmp_path / "replica.db")
    server = E.server(1, metadata={"clé": "valeur", "quote\"d": "x"}, tags=["été"])
    E.fill_replica(path, [("cell1", server)],
                   [E.flavor("7", "f", extra_specs={"ключ": "значение", "a:b": "c"})],
                   {"cell1": 1})
    proc, api = start_server(path, free_port())
    try:
        r = api.get("/v2.1/flavors/7/os-extra_specs/%D0%BA%D0%BB%D1%8E%D1%87")
        assert r.status == 404
        assert fault(r)[1] == ("Flavor 7 has no extra specs with key "
                               + "ключ".encode().decode("latin-1") + ".")
        assert api.get("/v2.1/flavors/7/os-extra_specs/a:b").json() == {"a:b": "c"}
        uid = server["uuid"]
        r = api.get(f"/v2.1/servers/{uid}/metadata/cl%C3%A9")
        assert r.status == 404 and fault(r)[1] == "Metadata item was not found"
        assert api.get(f"/v2.1/servers/{uid}/metadata/quote%22d").json() == {
            "meta": {"quote\"d": "x"}}
        r = api.get(f"/v2.1/servers/{uid}/tags/%C3%A9t%C3%A9", version="2.26")
        assert r.status == 404 and fault(r)[1] == f"Server {uid} has no tag 'Ã©tÃ©'"
        assert api.get(f"/v2.1/servers/{uid}/tags", version="2.26").json() == {
            "tags": ["été"]}
    finally:
        stop_server(proc)


@pytest.mark.parametrize("tail", ["metadata/a/b", "metadata/a%2Fb", "tags/a/b", "ips/net/x"])
def test_a_key_with_a_slash_is_no_route_as_in_nova(api, tail):
    """nova-api's router matches no route for a deeper path (a key holding '/', which
    the WSGI server decodes from %2F): its plain-text 404."""
    r = api.get(f"/v2.1/servers/{TAGGED}/{tail}", version="2.26")
    assert r.status == 404
    assert r.headers["content-type"] == "text/plain; charset=UTF-8"
    assert r.body == b"404 Not Found\n\nThe resource could not be found.\n\n   "


def test_each_statement_finds_its_parent_by_primary_key(replica_file):
    from replica.store.connection import open_reader
    from replica.store.reader import SUBRESOURCE_SQL
    conn = open_reader(replica_file)
    try:
        for name, sql in SUBRESOURCE_SQL.items():
            params = ("x", None, "k") if "?3" in sql else ("x", None)
            plan = [row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]
            table = "flavors" if name.startswith(("extra_spec", "flavor")) else "servers"
            assert any(step.startswith(f"SEARCH {table} USING INDEX sqlite_autoindex")
                       for step in plan), (name, plan)
            assert not any(step.startswith(f"SCAN {table}") for step in plan), (name, plan)
    finally:
        conn.close()


# -- the openstack command line -------------------------------------------------------------

def test_openstack_cli_flavor_show(anon_api):
    cli = os.path.join(VENV_BIN, "openstack")
    out = subprocess.run(
        [cli, "--os-auth-type", "none", "--os-endpoint",
         f"http://127.0.0.1:{anon_api.port}/v2.1", "--os-identity-api-version", "3",
         "flavor", "show", "m1.small", "-f", "json"],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert shown["name"] == "m1.small" and shown["id"] == "2"
    assert shown["ram"] == 2048
    assert shown["properties"] == {"hw:cpu_policy": "shared"}


# -- flavor access ---------------------------------------------------------------------------

def test_flavor_access_of_a_private_flavor(api):
    for prefix in ("/v2.1", PROJECT_PATH):
        r = api.get(f"{prefix}/flavors/6/os-flavor-access", token=ADMIN)
        assert r.status == 200 and r.statements == 1, r.body
        assert r.json() == {"flavor_access": [{"flavor_id": "6",
                                               "tenant_id": E.OTHER_PROJECT}]}
    r = api.get("/v2.1/flavors/5/os-flavor-access", token=ADMIN, version="2.102")
    assert r.json() == {"flavor_access": [{"flavor_id": "5", "tenant_id": E.PROJECT}]}


def test_flavor_access_faults(api):
    r = api.get("/v2.1/flavors/2/os-flavor-access", token=ADMIN)
    assert r.status == 404 and r.statements == 1
    assert fault(r) == (404, "Access list not available for public flavors.")
    r = api.get("/v2.1/flavors/nope/os-flavor-access", token=ADMIN)
    assert r.status == 404 and r.statements == 1
    assert fault(r) == (404, "Flavor nope could not be found.")
    # admins only (Nova's default policy), even for a flavor shared with the caller
    for token in (MEMBER, OTHER):
        r = api.get("/v2.1/flavors/5/os-flavor-access", token=token)
        assert fault(r) == (403, "Policy doesn't allow os_compute_api:os-flavor-access "
                                 "to be performed.")
    # the 2.102 query schema refuses any parameter (before the policy); below it, ignored
    assert api.get("/v2.1/flavors/5/os-flavor-access?x=1", token=ADMIN).status == 200
    assert api.get("/v2.1/flavors/5/os-flavor-access?x=1", version="2.102").status == 400
    assert api.get("/v2.1/flavors/5/os-flavor-access/x", token=ADMIN).status == 404
