"""GET /os-quota-sets/{project}[/detail|/defaults] against Nova's own response schemas
(nova_schemas.NOVA_VERSION), at every microversion where one of them starts or ends and
at both ends of the appliance's range, as an admin and as a member."""

from __future__ import annotations

import pytest

from tests.api import entities as E
from tests.api.conftest import serving
from tests.conformance import nova_schemas as N
from tests.conformance.checks import check_body
from tests.conformance.replicas import ROLES
from tests.conformance.test_nova_schemas import MAX_VERSION, MIN_VERSION

METHODS = {"show": "", "detail": "/detail", "defaults": "/defaults"}
ENDPOINTS = [("quota_sets", method) for method in METHODS]


@pytest.fixture(scope="module")
def quota_api(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("quota-set-conformance") / "replica.db")
    E.fill_replica(path, [("cell1", E.server(1))], [], {"cell1": 1, "flavors": 2})
    E.fill_quotas(path, [E.quota(None, cores=-1),
                         E.quota(E.PROJECT, server_groups_used=1, instances=4)])
    with serving(path) as client:
        yield client


def _cases():
    for version in N.boundaries(ENDPOINTS, MIN_VERSION, MAX_VERSION):
        for role in ROLES:
            for method, suffix in METHODS.items():
                path = f"/v2.1/os-quota-sets/{E.PROJECT}{suffix}"
                yield pytest.param(version, role, method, path,
                                   id=f"{N.format_version(version)}-{role}-{method}")


@pytest.mark.parametrize("version, role, method, path", list(_cases()))
def test_body_matches_nova_schema(quota_api, version, role, method, path):
    check_body(quota_api, "quota_sets", method, version, path, role)
