"""GET /os-keypairs[/{name}] against Nova's own response and query schemas
(nova_schemas.NOVA_VERSION), at every microversion where one of them starts or ends and
at both ends of the appliance's range, as an admin and as a member."""

from __future__ import annotations

from urllib.parse import quote, urlencode

import pytest

from tests.api import entities as E
from tests.api.conftest import start_server, stop_server
from tests.conformance import nova_schemas as N
from tests.conformance.replicas import ROLES
from tests.conformance.test_nova_query_schemas import _comparable
from tests.conformance.test_nova_schemas import MAX_VERSION, MIN_VERSION
from tests.conftest import free_port

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
    proc, client = start_server(path, free_port())
    try:
        yield client
    finally:
        stop_server(proc)


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
    v = N.format_version(version)
    attached, schema = N.schema_for("keypairs", method, version)
    response = keypairs_api.get(path, token=ROLES[role], version=v)
    where = f"GET {path} at {v} as {role}"
    assert response.status == 200, f"{where}: {response.status} {response.body[:300]!r}"
    assert response.statements == 1
    problems = N.violations(schema, response.json())
    if problems:
        pytest.fail(f"{where}: the body breaks {attached.where}:\n  " + "\n  ".join(problems),
                    pytrace=False)


def test_every_version_has_one_nova_schema_per_method():
    for minor in range(MIN_VERSION[1], MAX_VERSION[1] + 1):
        for resource, method in ENDPOINTS:
            N.schema_for(resource, method, (2, minor))
            N.schema_for(resource, method, (2, minor), N.QUERY)


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
    v = N.format_version(version)
    attached, schema = N.schema_for("keypairs", method, version, N.QUERY)
    failures = []
    for probe in PROBES:
        params: dict[str, list[str]] = {}
        for name, value in probe:
            params.setdefault(name, []).append(value)
        refused = N.query_error(schema, params)
        query = urlencode(probe)
        response = keypairs_api.get(f"{path}?{query}", token=ROLES["admin"], version=v)
        where = f"GET {path}?{query} at {v} ({attached.where})"
        if refused is not None:
            expected = {"badRequest": {"code": 400, "message": _comparable(refused)}}
            got = response.json() if response.status == 400 else None
            if got is not None and isinstance(got.get("badRequest"), dict):
                got["badRequest"]["message"] = _comparable(got["badRequest"].get("message"))
            if got != expected:
                failures.append(f"{where}: Nova answers 400 {refused!r}; the appliance "
                                f"{response.status} {response.body[:200]!r}")
        elif response.status != 200:
            failures.append(f"{where}: Nova's schema accepts it; the appliance answered "
                            f"{response.status} {response.body[:200]!r}")
    if failures:
        pytest.fail("\n".join(failures), pytrace=False)
