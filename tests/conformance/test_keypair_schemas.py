"""GET /os-keypairs[/{name}] against Nova's own response and query schemas
(nova_schemas.NOVA_VERSION), at every microversion where one of them starts or ends and
at both ends of the appliance's range, as an admin and as a member."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.api import entities as E
from tests.api.conftest import serving
from tests.conformance import nova_schemas as N
from tests.conformance.checks import check_body, check_every_version, check_query
from tests.conformance.replicas import ROLES
from tests.conformance.test_nova_schemas import MAX_VERSION, MIN_VERSION

# ROLES: "admin" is user admin, "member" user fake (tests.api.conftest)
KEYPAIRS = [E.keypair(user, name, n, type="x509" if name == "cert" else "ssh")
            for n, (user, name) in enumerate(
                [("admin", "ops-key"), ("admin", "cert"), ("fake", "laptop"),
                 ("fake", "cert"), ("fake", "with space")], start=1)]
ENDPOINTS = [("keypairs", "index"), ("keypairs", "show")]


@pytest.fixture(scope="module")
def keypairs_api(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("keypairs-conformance") / "replica.db")
    E.fill_replica(path, [], [E.flavor()], {"flavors": 5})
    E.fill_keypairs(path, KEYPAIRS)
    with serving(path) as client:
        yield client


def _cases():
    for version in N.boundaries(ENDPOINTS, MIN_VERSION, MAX_VERSION):
        for role in ROLES:
            user = "admin" if role == "admin" else "fake"
            paths = [("index", "/v2.1/os-keypairs"), ("index", "/v2.1/os-keypairs?limit=1")]
            paths += [("show", f"/v2.1/os-keypairs/{quote(k['name'])}")
                      for k in KEYPAIRS if k["user_id"] == user]
            for method, path in paths:
                yield pytest.param(version, role, method, path,
                                   id=f"{N.format_version(version)}-{role}-{path}")


@pytest.mark.parametrize("version, role, method, path", list(_cases()))
def test_body_matches_nova_schema(keypairs_api, version, role, method, path):
    check_body(keypairs_api, "keypairs", method, version, path, role)


def test_every_version_has_one_nova_schema_per_method():
    check_every_version(ENDPOINTS, MIN_VERSION, MAX_VERSION)


PROBES = [
    [("bogus", "1")],
    [("limit", "1")],
    [("limit", "x")],
    [("limit", "-1")],
    [("marker", "cert")],
    [("user_id", "admin")],
]


def _query_cases():
    for version in N.boundaries(ENDPOINTS, MIN_VERSION, MAX_VERSION, N.QUERY):
        for method, path in (("index", "/v2.1/os-keypairs"),
                             ("show", "/v2.1/os-keypairs/ops-key")):
            yield pytest.param(version, method, path,
                               id=f"{N.format_version(version)}-{method}")


@pytest.mark.parametrize("version, method, path", list(_query_cases()))
def test_query_parameters_as_nova_validates_them(keypairs_api, version, method, path):
    check_query(keypairs_api, "keypairs", method, version, path, PROBES, "admin")
