"""Query parameters against Nova's own query schemas: for every read route, at every
microversion where one of Nova's query schemas of these methods starts or ends (read
from the controllers' ``@validation.query_schema`` decorators) and at both ends of the
appliance's range, a set of probe query strings is sent; where Nova's validator refuses
the probe, the appliance must answer 400 with Nova's exact message, and where Nova
accepts it (or drops unknown names, below the strict versions), a success."""

from __future__ import annotations

import pytest

from tests.api import entities as E
from tests.conformance import nova_schemas as N
from tests.conformance.checks import check_query
from tests.conformance.replicas import ROLES
from tests.conformance.test_nova_schemas import MAX_VERSION, MIN_VERSION

SERVER = E.server(1)["uuid"]
# (resource, method, path, HTTP status of a success)
ROUTES = [
    ("servers", "index", "/v2.1/servers", 200),
    ("servers", "detail", "/v2.1/servers/detail", 200),
    ("servers", "show", f"/v2.1/servers/{SERVER}", 200),
    ("servers", "show", f"/v2.1/{E.PROJECT}/servers/{SERVER}", 200),
    ("flavors", "index", "/v2.1/flavors", 200),
    ("flavors", "detail", "/v2.1/flavors/detail", 200),
    ("flavors", "show", "/v2.1/flavors/2", 200),
    ("flavors_extraspecs", "index", "/v2.1/flavors/2/os-extra_specs", 200),
    ("flavors_extraspecs", "show", "/v2.1/flavors/2/os-extra_specs/hw:cpu_policy", 200),
    ("server_metadata", "index", f"/v2.1/servers/{SERVER}/metadata", 200),
    ("server_metadata", "show", f"/v2.1/servers/{SERVER}/metadata/role", 200),
    ("ips", "index", f"/v2.1/servers/{SERVER}/ips", 200),
    ("ips", "show", f"/v2.1/servers/{SERVER}/ips/private", 200),
    ("server_tags", "index", f"/v2.1/servers/{SERVER}/tags", 200),
    ("server_tags", "show", f"/v2.1/servers/{SERVER}/tags/web", 204),
    ("versions", "index", "/", 200),
    ("versionsV21", "show", "/v2.1/", 200),
]
TAGS_FROM = (2, 26)
# Query strings as (name, value) pairs; what Nova's validator gets is name -> [values].
PROBES = [
    [("bogus", "1")],
    [("zeta", "1"), ("alpha", "2"), ("zeta", "3")],
    [("limit", "x"), ("bogus", "1")],
    [("name", "m1")],
    [("rxtx_factor", "1")],
    [("sort_key", "rxtx_factor")],
    [("limit", "2")],
]


def _versions() -> list:
    return N.boundaries([(r, m) for r, m, _, _ in ROUTES], MIN_VERSION, MAX_VERSION, N.QUERY)


def _cases():
    for version in _versions():
        for role in ROLES:
            for resource, method, path, status in ROUTES:
                if resource == "server_tags" and version < TAGS_FROM:
                    continue
                yield pytest.param(version, role, resource, method, path, status,
                                   id=f"{N.format_version(version)}-{role}-{path}")


def test_the_versions_include_the_strict_ones():
    versions = _versions()
    assert {(2, 74), (2, 75), (2, 101), (2, 102), MAX_VERSION} <= set(versions), versions


@pytest.mark.parametrize("version, role, resource, method, path, status", list(_cases()))
def test_query_parameters_as_nova_validates_them(conformance_api, version, role, resource,
                                                 method, path, status):
    check_query(conformance_api, resource, method, version, path, PROBES, role, status)
