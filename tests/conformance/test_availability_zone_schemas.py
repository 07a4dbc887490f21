"""GET /os-availability-zone and /detail against Nova's own response and query schemas
(nova_schemas.NOVA_VERSION), at every microversion where one of them starts or ends and
at both ends of the appliance's range: the list as a member and an admin, the detail as
an admin, over zones of every state (available, not, internal, services alive and not,
no updated_at)."""

from __future__ import annotations

import pytest

from tests.api import entities as E
from tests.api.conftest import serving
from tests.conformance import nova_schemas as N
from tests.conformance.checks import check_body, check_every_version, check_query
from tests.conformance.replicas import ROLES
from tests.conformance.test_nova_schemas import MAX_VERSION, MIN_VERSION

ENDPOINTS = [("availability_zone", "index"), ("availability_zone", "detail")]


@pytest.fixture(scope="module")
def zones_api(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("zones-conformance") / "replica.db")
    E.fill_replica(path, [], [E.flavor()], {"cell1": 1, "cell2": 1, "flavors": 1})
    E.fill_zones(path, [
        ("cell1", E.service(1, "compute-1")),
        ("cell1", E.service(2, "compute-2", forced_down=True, updated_at=None)),
        ("cell2", E.service(3, "compute-3", heartbeat="2026-01-01T00:00:00.000000")),
        ("cell2", E.service(4, "compute-4", disabled=True)),
        ("cell1", E.service(5, "control-1", "nova-scheduler")),
        ("cell1", E.service(6, "control-1", "nova-osapi_compute"))],
        [E.zoned_aggregate(1, "az-east", ["compute-1", "compute-2"]),
         E.zoned_aggregate(2, "az-dark", ["compute-4"])])
    with serving(path) as client:
        yield client


def _cases():
    for version in N.boundaries(ENDPOINTS, MIN_VERSION, MAX_VERSION):
        for role in ROLES:
            yield pytest.param(version, role, "index", "/v2.1/os-availability-zone",
                               id=f"{N.format_version(version)}-{role}-index")
        yield pytest.param(version, "admin", "detail", "/v2.1/os-availability-zone/detail",
                           id=f"{N.format_version(version)}-admin-detail")


@pytest.mark.parametrize("version, role, method, path", list(_cases()))
def test_body_matches_nova_schema(zones_api, version, role, method, path):
    check_body(zones_api, "availability_zone", method, version, path, role)


def test_every_version_has_one_nova_schema():
    check_every_version(ENDPOINTS, MIN_VERSION, MAX_VERSION)


PROBES = [[("bogus", "1")], [("limit", "1"), ("marker", "x")]]


@pytest.mark.parametrize("version", [pytest.param(v, id=N.format_version(v)) for v in
                                     N.boundaries(ENDPOINTS, MIN_VERSION, MAX_VERSION,
                                                  N.QUERY)])
@pytest.mark.parametrize("method, path", [("index", "/v2.1/os-availability-zone"),
                                          ("detail", "/v2.1/os-availability-zone/detail")])
def test_query_parameters_as_nova_validates_them(zones_api, version, method, path):
    check_query(zones_api, "availability_zone", method, version, path, PROBES, "admin")
