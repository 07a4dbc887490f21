"""How Nova treats the server lists' parameters where they meet (found by comparing random
combinations with real nova-api, tests/realnova/test_differential.py): the schema's order
of checks, empty values, sort directions only its build requests check, a flavor it
cannot find, ip / ip6 asked of Neutron, the project id anywhere in the URL, next links."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from tests.api import entities as E
from tests.api.conftest import ADMIN

P = E.PROJECT
NO_SUCH = "00000000-0000-4000-8000-000000000000"


def sid(n: int) -> str:
    return E.server(n)["uuid"]


def ids(response) -> list[str]:
    return [s["id"] for s in response.json()["servers"]]


def message(response) -> str:
    return response.json()["badRequest"]["message"]


def test_an_empty_marker_is_no_marker(api):
    assert api.get("/v2.1/servers?marker=").status == 200
    assert ids(api.get("/v2.1/servers?marker=&limit=3")) == ids(api.get("/v2.1/servers?limit=3"))


def test_an_empty_regex_filter_is_refused_before_the_policy(api):
    r = api.get("/v2.1/servers?name=&all_tenants=1")       # a member: 403 were it checked
    assert r.status == 400
    assert message(r) == "Invalid input for query parameters name. Value: . '' is not a 'regex'"


@pytest.mark.parametrize("query,version,first", [
    ("config_drive=&changes-before=garbage", "2.100", "config_drive"),
    ("changes-before=garbage&config_drive=", "2.100", "config_drive"),
    ("limit=-1&changes-since=garbage", "2.26", "changes-since"),
    ("tags=&name=[", "2.26", "name"),            # 2.26's tags come after every 2.1 one
    ("limit=x&tags=", "2.26", "limit"),
])
def test_the_first_property_of_the_schema_is_reported(api, query, version, first):
    r = api.get(f"/v2.1/servers?{query}", version=version)
    assert r.status == 400
    assert message(r).startswith(f"Invalid input for query parameters {first}.")


@pytest.mark.parametrize("query,status", [
    ("sort_dir=up", 400),
    ("sort_dir=ASC&sort_key=display_name", 400),
    # where Nova sorts no build request first, only its cells' queries refuse them, and
    # it leaves each cell out: []
    ("sort_dir=up&ip=10.0.0.13", 200),
    ("sort_dir=up&ip6=fd00", 200),
    (f"sort_dir=up&ip=10.0.0.13&marker={NO_SUCH}", 400),
    ("sort_dir=up&limit=0", 200),
])
def test_sort_directions_nova_refuses(api, query, status):
    r = api.get(f"/v2.1/servers?{query}", version="2.5")      # ip6: a member's from 2.5
    assert r.status == status, r.body
    if status == 400:
        assert message(r) == ("Invalid input received: Unknown sort direction, must be 'desc' "
                              "or 'asc'")
    else:
        assert ids(r) == []


@pytest.mark.parametrize("query,token,status,listed", [
    ("flavor=2", None, 200, [14]),
    ("flavor=99", None, 200, []),
    (f"flavor=99&marker={NO_SUCH}", None, 200, []),       # Nova stops before the marker
    ("flavor=99&sort_dir=up", None, 200, []),
    ("flavor=2&sort_dir=up", None, 400, None),
    (f"flavor=2&marker={NO_SUCH}", None, 400, None),
    ("flavor=6", None, 200, []),                # another project's private flavor
    ("flavor=6&sort_dir=up", None, 200, []),
    ("flavor=6&sort_dir=up", ADMIN, 400, None),  # an admin finds any flavor
])
def test_a_flavor_the_caller_cannot_find_lists_nothing(api, query, token, status, listed):
    r = api.get(f"/v2.1/servers?{query}", **({"token": token} if token else {}))
    assert r.status == status, r.body
    assert r.statements <= 1
    if listed is not None:
        assert ids(r) == [sid(n) for n in listed]


@pytest.mark.parametrize("query,status", [
    (f"ip=no-such&marker={NO_SUCH}", 200),        # Neutron found no port: [] at once
    (f"ip6=no-such&marker={NO_SUCH}", 200),
    (f"ip=10.0.0.13&marker={NO_SUCH}", 400),
])
def test_an_address_no_port_has_answers_before_the_marker(api, query, status):
    r = api.get(f"/v2.1/servers?{query}", version="2.5")
    assert r.status == status, r.body
    if status == 200:
        assert ids(r) == []


def test_links_name_the_project_when_the_url_does(api):
    server = api.get(f"/v2.1/servers?project_id={P}&limit=1").json()
    href = server["servers"][0]["links"][0]["href"]
    assert f"/v2.1/{P}/servers/" in href
    assert f"/v2.1/{P}/servers?" in server["servers_links"][0]["href"]
    plain = api.get("/v2.1/servers?limit=1").json()
    assert f"/{P}/" not in plain["servers"][0]["links"][0]["href"]
    shown = api.get(f"/v2.1/servers/{sid(0)}?x={P}").json()["server"]
    assert f"/v2.1/{P}/servers/{sid(0)}" in shown["links"][0]["href"]
    assert f"/v2.1/{P}/servers/" not in api.get(f"/v2.1/servers/{sid(0)}").json()[
        "server"]["links"][0]["href"]


def test_the_next_link_keeps_the_parameters_the_schema_names(api):
    # 2.1: changes-before and foo are not in the schema (Nova drops them from the request)
    r = api.get("/v2.1/servers?limit=2&foo=bar&changes-before=garbage&name=server")
    assert r.status == 200
    link = r.json()["servers_links"][0]["href"]
    assert parse_qs(urlsplit(link).query) == {"limit": ["2"], "name": ["server"],
                                              "marker": [ids(r)[-1]]}
    flavors = api.get("/v2.1/flavors?limit=1&foo=bar").json()["flavors_links"][0]["href"]
    assert set(parse_qs(urlsplit(flavors).query)) == {"limit", "marker"}


@pytest.mark.parametrize("path,version", [
    ("/v2.1/os-keypairs", "2.75"),
    ("/v2.1/os-hypervisors", "2.53"),
    (f"/v2.1/servers/{sid(0)}/os-instance-actions", "2.58"),
    ("/v2.1/os-server-groups", "2.75"),
    ("/v2.1/servers", "2.75"),
    ("/v2.1/flavors", "2.75"),
])
def test_a_bad_property_is_reported_before_an_unknown_parameter(api, path, version):
    r = api.get(f"{path}?foo=1&limit=x", token=ADMIN, version=version)
    assert r.status == 400
    assert message(r) == ("Invalid input for query parameters limit. Value: x. "
                          "'x' does not match '^[0-9]*$'")



def test_the_description_filter_filters_nothing(api):
    """Nova's schema takes ``description`` (an admin's filter), but its database layer
    looks for an Instance attribute of that name, has none, and passes it by."""
    every = ids(api.get("/v2.1/servers?all_tenants=1", token=ADMIN))
    assert ids(api.get("/v2.1/servers?all_tenants=1&description=no-such", token=ADMIN)) \
        == every
    assert ids(api.get("/v2.1/servers?all_tenants=1&display_description=no-such",
                       token=ADMIN)) == []


def test_a_server_is_found_by_its_uuid_as_nova_s_database_matches_it():
    from replica.store import reader
    uuid = sid(0)
    try:
        reader.set_nova_collation("binary")             # SQLite: the text as stored
        assert reader.stored_server_uuid(uuid) == uuid
        assert [reader.stored_server_uuid(other) for other in (
            uuid.upper(), uuid.replace("-", ""), "{" + uuid + "}", "no-such")] == [None] * 4
        reader.set_nova_collation("utf8_general_ci")    # MariaDB: capitals match too
        assert reader.stored_server_uuid(uuid.upper()) == uuid
        assert reader.stored_server_uuid(uuid.replace("-", "")) is None
    finally:
        reader.set_nova_collation("binary")
