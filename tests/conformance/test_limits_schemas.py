"""GET /limits against Nova's own response and query schemas (nova_schemas.NOVA_VERSION),
at every microversion where one of them starts or ends and at both ends of the
appliance's range, as an admin and as a member, with and without quota rows."""

from __future__ import annotations

import pytest

from tests.api import entities as E
from tests.api.conftest import serving
from tests.conformance import nova_schemas as N
from tests.conformance.checks import check_body, check_every_version, check_query
from tests.conformance.replicas import ROLES
from tests.conformance.test_nova_schemas import MAX_VERSION, MIN_VERSION

ENDPOINTS = [("limits", "index")]


@pytest.fixture(scope="module")
def limits_api(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("limits-conformance") / "replica.db")
    E.fill_replica(path, [("cell1", E.server(1)), ("cell1", E.server(2, vm_state="error"))],
                   [], {"cell1": 2, "flavors": 2})
    E.fill_quotas(path, [E.quota(None, cores=-1),
                         E.quota(E.PROJECT, server_groups_used=2, instances=4, key_pairs=0)])
    with serving(path) as client:
        yield client


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
    check_body(limits_api, "limits", "index", version, path, role)


def test_every_version_has_one_nova_schema():
    check_every_version(ENDPOINTS, MIN_VERSION, MAX_VERSION)


PROBES = [
    [("bogus", "1")],
    [("tenant_id", E.PROJECT)],
    [("tenant_id", E.PROJECT), ("tenant_id", E.OTHER_PROJECT)],
]


@pytest.mark.parametrize("version", [pytest.param(v, id=N.format_version(v)) for v in
                                     N.boundaries(ENDPOINTS, MIN_VERSION, MAX_VERSION,
                                                  N.QUERY)])
def test_query_parameters_as_nova_validates_them(limits_api, version):
    check_query(limits_api, "limits", "index", version, "/v2.1/limits", PROBES, "admin")
