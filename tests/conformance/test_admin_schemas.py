"""Admin reads against Nova's own response and query schemas (nova_schemas.NOVA_VERSION),
at every microversion where one of them starts or ends and at both ends of the
appliance's range: GET /flavors/{id}/os-flavor-access, /os-services, /os-aggregates[/{id}]."""

from __future__ import annotations

import pytest

from tests.api import entities as E
from tests.api.conftest import serving
from tests.conformance import nova_schemas as N
from tests.conformance.checks import check_body, check_every_version, check_query
from tests.conformance.test_nova_schemas import MAX_VERSION, MIN_VERSION

FLAVORS = [E.flavor("1"),
           E.flavor("shared", "shared", is_public=False, projects=[E.PROJECT, E.OTHER_PROJECT]),
           E.flavor("unshared", "unshared", is_public=False, projects=[])]
FLAVOR_ACCESS = [("flavor_access", "index")]
PROBES = [[("bogus", "1")], [("limit", "1")]]
SERVICES = [E.service(1, "compute-1"),
            E.service(2, "compute-2", disabled=True, disabled_reason="maintenance",
                      forced_down=True, updated_at=None),
            E.service(3, "control-1", "nova-conductor", heartbeat="2026-01-01T00:00:00.000000")]
SERVICES_INDEX = [("services", "index")]
AGGREGATES = [E.aggregate(1, "zoned", ["compute-1"], {"availability_zone": "west"}),
              E.aggregate(2, "bare", [], {}, updated_at=E.stamp(4))]
AGGREGATE_METHODS = [("aggregates", "index"), ("aggregates", "show")]
SERVICE_PROBES = [[("bogus", "1")], [("host", "compute-1")], [("binary", "nova-compute")],
                  [("host", "")], [("host", "a"), ("host", "b")]]


@pytest.fixture(scope="module")
def admin_api(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("admin-conformance") / "replica.db")
    E.fill_replica(path, [], FLAVORS, {"cell1": 1, "flavors": 5})
    E.fill_kind(path, "service", "cell1", SERVICES)
    E.fill_kind(path, "aggregate", "flavors", AGGREGATES)
    with serving(path) as client:
        yield client


@pytest.mark.parametrize("version", N.boundaries(FLAVOR_ACCESS, MIN_VERSION, MAX_VERSION),
                         ids=N.format_version)
@pytest.mark.parametrize("flavorid", ["shared", "unshared"])
def test_flavor_access_body_matches_nova_schema(admin_api, version, flavorid):
    check_body(admin_api, "flavor_access", "index", version,
               f"/v2.1/flavors/{flavorid}/os-flavor-access", "admin")


@pytest.mark.parametrize("version", N.boundaries(FLAVOR_ACCESS, MIN_VERSION, MAX_VERSION,
                                                 N.QUERY), ids=N.format_version)
def test_flavor_access_query_as_nova_validates_it(admin_api, version):
    check_query(admin_api, "flavor_access", "index", version,
                "/v2.1/flavors/shared/os-flavor-access", PROBES, "admin")


def test_every_version_has_one_nova_schema_per_method():
    check_every_version(FLAVOR_ACCESS, MIN_VERSION, MAX_VERSION)


@pytest.mark.parametrize("version", N.boundaries(SERVICES_INDEX, MIN_VERSION, MAX_VERSION),
                         ids=N.format_version)
@pytest.mark.parametrize("query", ["", "?host=compute-2", "?binary=nova-conductor"])
def test_services_body_matches_nova_schema(admin_api, version, query):
    check_body(admin_api, "services", "index", version, f"/v2.1/os-services{query}", "admin")


@pytest.mark.parametrize("version", N.boundaries(SERVICES_INDEX, MIN_VERSION, MAX_VERSION,
                                                 N.QUERY), ids=N.format_version)
def test_services_query_as_nova_validates_it(admin_api, version):
    check_query(admin_api, "services", "index", version, "/v2.1/os-services", SERVICE_PROBES,
                "admin")


def test_services_every_version_has_one_nova_schema():
    check_every_version(SERVICES_INDEX, MIN_VERSION, MAX_VERSION)


@pytest.mark.parametrize("version", N.boundaries(AGGREGATE_METHODS, MIN_VERSION, MAX_VERSION),
                         ids=N.format_version)
@pytest.mark.parametrize("method, path", [("index", "/v2.1/os-aggregates"),
                                          ("show", "/v2.1/os-aggregates/1"),
                                          ("show", "/v2.1/os-aggregates/2")])
def test_aggregates_body_matches_nova_schema(admin_api, version, method, path):
    check_body(admin_api, "aggregates", method, version, path, "admin")


@pytest.mark.parametrize("version", N.boundaries(AGGREGATE_METHODS, MIN_VERSION, MAX_VERSION,
                                                 N.QUERY), ids=N.format_version)
@pytest.mark.parametrize("method, path", [("index", "/v2.1/os-aggregates"),
                                          ("show", "/v2.1/os-aggregates/1")])
def test_aggregates_query_as_nova_validates_it(admin_api, version, method, path):
    check_query(admin_api, "aggregates", method, version, path, PROBES, "admin")


def test_aggregates_every_version_has_one_nova_schema():
    check_every_version(AGGREGATE_METHODS, MIN_VERSION, MAX_VERSION)
