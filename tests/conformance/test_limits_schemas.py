"""GET /limits against Nova's own response and query schemas (nova_schemas.NOVA_VERSION),
at every microversion where one of them starts or ends and at both ends of the
appliance's range, as an admin and as a member, with and without quota rows."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from tests.api import entities as E
from tests.api.conftest import start_server, stop_server
from tests.conformance import nova_schemas as N
from tests.conformance.replicas import ROLES
from tests.conformance.test_nova_query_schemas import _comparable
from tests.conformance.test_nova_schemas import MAX_VERSION, MIN_VERSION
from tests.conftest import free_port

ENDPOINTS = [("limits", "index")]


@pytest.fixture(scope="module")
def limits_api(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("limits-conformance") / "replica.db")
    E.fill_replica(path, [("cell1", E.server(1)), ("cell1", E.server(2, vm_state="error"))],
                   [], {"cell1": 2, "flavors": 2})
    E.fill_quotas(path, [E.quota(None, cores=-1),
                         E.quota(E.PROJECT, server_groups_used=2, instances=4, key_pairs=0)])
    proc, client = start_server(path, free_port())
    try:
        yield client
    finally:
        stop_server(proc)


def _cases():
    for version in N.boundaries(ENDPOINTS, MIN_VERSION, MAX_VERSION):
        for role in ROLES:
            paths = ["/v2.1/limits"]
            if role == "admin":
                paths.append(f"/v2.1/limits?tenant_id={E.OTHER_PROJECT}")
            for path in paths:
                yield pytest.param(version, role, path,
                                   id=f"{N.format_version(version)}-{role}-{path}")


@pytest.mark.parametrize("version, role, path", list(_cases()))
def test_body_matches_nova_schema(limits_api, version, role, path):
    v = N.format_version(version)
    attached, schema = N.schema_for("limits", "index", version)
    response = limits_api.get(path, token=ROLES[role], version=v)
    where = f"GET {path} at {v} as {role}"
    assert response.status == 200, f"{where}: {response.status} {response.body[:300]!r}"
    assert response.statements == 1
    problems = N.violations(schema, response.json())
    if problems:
        pytest.fail(f"{where}: the body breaks {attached.where}:\n  " + "\n  ".join(problems),
                    pytrace=False)


def test_every_version_has_one_nova_schema():
    for minor in range(MIN_VERSION[1], MAX_VERSION[1] + 1):
        N.schema_for("limits", "index", (2, minor))
        N.schema_for("limits", "index", (2, minor), N.QUERY)


PROBES = [
    [("bogus", "1")],
    [("tenant_id", E.PROJECT)],
    [("tenant_id", E.PROJECT), ("tenant_id", E.OTHER_PROJECT)],
]


@pytest.mark.parametrize("version", [pytest.param(v, id=N.format_version(v)) for v in
                                     N.boundaries(ENDPOINTS, MIN_VERSION, MAX_VERSION,
                                                  N.QUERY)])
def test_query_parameters_as_nova_validates_them(limits_api, version):
    v = N.format_version(version)
    attached, schema = N.schema_for("limits", "index", version, N.QUERY)
    failures = []
    for probe in PROBES:
        params: dict[str, list[str]] = {}
        for name, value in probe:
            params.setdefault(name, []).append(value)
        refused = N.query_error(schema, params)
        query = urlencode(probe)
        response = limits_api.get(f"/v2.1/limits?{query}", token=ROLES["admin"], version=v)
        where = f"GET /v2.1/limits?{query} at {v} ({attached.where})"
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
