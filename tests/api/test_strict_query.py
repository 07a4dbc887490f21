"""Unknown query parameters, per route and microversion, as Nova 34 answers them.

Nova's query schemas refuse parameters they do not name (``additionalProperties: False``):
GET /servers and /flavors (+ /detail) from 2.75; from 2.102 also every route whose query
schema names none: server show, flavor show, flavor extra specs, server metadata and ips
(index and show). Below those versions Nova drops unknown parameters. Server tags are the
exception: Nova 34 defines strict 2.102 schemas for them but attaches the lenient ones.
Version documents never refuse parameters."""

from __future__ import annotations

import pytest

from tests.api import entities as E
from tests.api.conftest import ADMIN

SERVER = E.server(0)["uuid"]                  # tags ["web", "prod"], metadata, ips
MISSING = "0e44cc9c-e052-415d-afbf-469b0dffffff"
UNEXPECTED_FOO = "Additional properties are not allowed ('foo' was unexpected)"

# Routes whose query schema has no properties: strict from 2.102.
STRICT_FROM_2_102 = [
    f"/v2.1/servers/{SERVER}",
    f"/v2.1/{E.PROJECT}/servers/{SERVER}",
    "/v2.1/flavors/1",
    "/v2.1/flavors/2/os-extra_specs",
    "/v2.1/flavors/2/os-extra_specs/hw:cpu_policy",
    f"/v2.1/servers/{SERVER}/metadata",
    f"/v2.1/servers/{SERVER}/metadata/My%20Server%20Name",
    f"/v2.1/servers/{SERVER}/ips",
    f"/v2.1/servers/{SERVER}/ips/private",
]
NEVER_STRICT = [
    (f"/v2.1/servers/{SERVER}/tags", 200),
    (f"/v2.1/servers/{SERVER}/tags/web", 204),
    ("/", 200),
    ("/v2.1/", 200),
]


def fault(r) -> tuple[str, int, str]:
    assert r.headers["content-type"] == "application/json"
    ((name, body),) = r.json().items()
    return name, body["code"], body["message"]


@pytest.mark.parametrize("path", STRICT_FROM_2_102)
@pytest.mark.parametrize("version", ["2.1", "2.26", "2.75", "2.101"])
def test_unknown_parameters_are_dropped_before_2_102(api, path, version):
    plain = api.get(path, version=version)
    r = api.get(path + "?foo=1", version=version)
    assert r.status == plain.status == 200, r.body
    assert r.json() == plain.json()


@pytest.mark.parametrize("path", STRICT_FROM_2_102)
@pytest.mark.parametrize("version", ["2.102", "2.103", "2.104"])
def test_unknown_parameters_are_refused_from_2_102(api, path, version):
    r = api.get(path + "?foo=1", version=version)
    assert r.status == 400, r.body
    assert fault(r) == ("badRequest", 400, UNEXPECTED_FOO)
    assert r.headers["openstack-api-version"] == f"compute {version}"
    assert r.headers["server-timing"].startswith('db;desc="0 stmt"')   # no statement ran
    assert api.get(path, version=version).status == 200


@pytest.mark.parametrize("path,status", NEVER_STRICT)
def test_routes_that_stay_lenient(api, path, status):
    r = api.get(path + "?foo=1", version="2.104")
    assert r.status == status, r.body


def test_every_name_is_reported_sorted_once(api):
    r = api.get(f"/v2.1/servers/{SERVER}?zeta=1&alpha=2&zeta=3&empty", version="2.102")
    assert fault(r) == ("badRequest", 400, "Additional properties are not allowed "
                                           "('alpha', 'empty', 'zeta' were unexpected)")


@pytest.mark.parametrize("query", ["", "?", "?&"])
def test_an_empty_query_string_is_no_parameter(api, query):
    assert api.get(f"/v2.1/servers/{SERVER}{query}", version="2.104").status == 200
    assert api.get(f"/v2.1/flavors/1{query}", version="2.104").status == 200


@pytest.mark.parametrize("path", [f"/v2.1/servers/{MISSING}", "/v2.1/servers/nope",
                                  "/v2.1/flavors/nope", f"/v2.1/servers/{MISSING}/metadata",
                                  "/v2.1/flavors/nope/os-extra_specs"])
def test_the_query_is_checked_before_the_item_is_looked_up(api, path):
    """Nova validates the query before the controller runs: 400, not 404."""
    r = api.get(path + "?foo=1", version="2.102")
    assert fault(r) == ("badRequest", 400, UNEXPECTED_FOO)
    assert api.get(path, version="2.102").status == 404


def test_head_and_admin_are_checked_too(api):
    assert api.request("HEAD", f"/v2.1/servers/{SERVER}?foo=1", version="2.102").status == 400
    r = api.get(f"/v2.1/servers/{SERVER}?foo=1", token=ADMIN, version="2.104")
    assert fault(r) == ("badRequest", 400, UNEXPECTED_FOO)


@pytest.mark.parametrize("version", ["2.75", "2.101", "2.102", "2.104"])
def test_server_listings_keep_their_2_75_schema(api, version):
    """GET /servers' schema (strict since 2.75, with patternProperties '^_') is not
    changed by 2.102: jsonschema names the regex the parameters miss."""
    r = api.get("/v2.1/servers/detail?foo=1", version=version)
    assert fault(r) == ("badRequest", 400, "'foo' does not match any of the regexes: '^_'")
    r = api.get("/v2.1/servers?_foo=1", token=ADMIN, version=version)
    assert fault(r) == ("badRequest", 400, "Invalid filter field: _foo.")
    assert api.get("/v2.1/servers?foo=1", version="2.74").status == 200


@pytest.mark.parametrize("path", ["/v2.1/flavors", "/v2.1/flavors/detail"])
def test_flavor_listings_from_2_102(api, path):
    r = api.get(path + "?rxtx_factor=1", version="2.102")
    assert fault(r) == ("badRequest", 400,
                        "Additional properties are not allowed ('rxtx_factor' was unexpected)")
    r = api.get(path + "?sort_key=rxtx_factor", version="2.102")
    name, code, message = fault(r)
    assert (name, code) == ("badRequest", 400)
    assert message.startswith("Invalid input for query parameters sort_key. Value: "
                              "rxtx_factor. 'rxtx_factor' is not one of ['created_at', ")
    assert "'rxtx_factor'" not in message.split("is not one of")[1]
    assert api.get(path + "?sort_key=rxtx_factor", version="2.101").status == 200
    # the name filter is a property from 2.102 only
    r = api.get(path + "?name=tiny", version="2.101")
    assert fault(r) == ("badRequest", 400,
                        "Additional properties are not allowed ('name' was unexpected)")
    assert api.get(path + "?name=tiny", version="2.102").status == 200
