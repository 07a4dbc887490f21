"""GET /os-hypervisors, /detail, /{id} (and before 2.53 /{pattern}/search and
/{pattern}/servers) against Nova's own response and query schemas
(nova_schemas.NOVA_VERSION), at every microversion where one of them starts or ends and
at both ends of the appliance's range (admin only: a member's 403 is in
tests/api/test_hypervisors.py)."""

from __future__ import annotations

import pytest

from tests.api import entities as E
from tests.api.conftest import serving
from tests.conformance import nova_schemas as N
from tests.conformance.checks import check_body, check_every_version, check_query
from tests.conformance.test_nova_schemas import MAX_VERSION, MIN_VERSION

NODES = [("cell1", E.hypervisor(1)),
         ("cell1", E.hypervisor(2, state="down", service_disabled=True,
                                service_disabled_reason="broken fan", cpu_info="",
                                uptime=" 10:01:02 up 3 days", free_ram_mb=None,
                                running_vms=None, disk_available_least=None, host_ip=None)),
         ("cell2", E.hypervisor(3, "compute-9", id=1))]
SERVERS = [("cell1", E.server(0, host="compute-1")), ("cell2", E.server(1, host="compute-9"))]
ENDPOINTS = [("hypervisors", "index"), ("hypervisors", "detail"), ("hypervisors", "show")]
OLD_ENDPOINTS = [("hypervisors", "search"), ("hypervisors", "servers")]
OLD_HIGH = (2, 52)


@pytest.fixture(scope="module")
def hypervisors_api(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("hypervisors-conformance") / "replica.db")
    E.fill_replica(path, SERVERS, [E.flavor()], {"cell1": 3, "cell2": 2, "flavors": 1})
    E.fill_hypervisors(path, NODES)
    with serving(path) as client:
        yield client


def _show_paths(version) -> list[str]:
    if version >= (2, 53):
        return [f"/v2.1/os-hypervisors/{h['uuid']}" for _cell, h in NODES] + [
            f"/v2.1/os-hypervisors/{NODES[0][1]['uuid']}?with_servers=true",
            f"/v2.1/os-hypervisors/{NODES[1][1]['uuid']}?with_servers=true"]
    return ["/v2.1/os-hypervisors/1", "/v2.1/os-hypervisors/2"]


def _cases():
    for version in N.boundaries(ENDPOINTS, MIN_VERSION, MAX_VERSION):
        paths = [("index", "/v2.1/os-hypervisors"), ("index", "/v2.1/os-hypervisors?limit=1"),
                 ("detail", "/v2.1/os-hypervisors/detail"),
                 ("detail", "/v2.1/os-hypervisors/detail?limit=2")]
        if version >= (2, 53):
            paths += [("index", "/v2.1/os-hypervisors?with_servers=true"),
                      ("detail", "/v2.1/os-hypervisors/detail?with_servers=1"),
                      ("index", "/v2.1/os-hypervisors?hypervisor_hostname_pattern=compute")]
        paths += [("show", path) for path in _show_paths(version)]
        for method, path in paths:
            yield pytest.param(version, method, path,
                               id=f"{N.format_version(version)}-{path}")
    for version in N.boundaries(OLD_ENDPOINTS, MIN_VERSION, OLD_HIGH):
        for method in ("search", "servers"):
            path = f"/v2.1/os-hypervisors/compute/{method}"
            yield pytest.param(version, method, path, id=f"{N.format_version(version)}-{path}")


@pytest.mark.parametrize("version, method, path", list(_cases()))
def test_body_matches_nova_schema(hypervisors_api, version, method, path):
    check_body(hypervisors_api, "hypervisors", method, version, path, "admin")


def test_every_version_has_one_nova_schema_per_method():
    check_every_version(ENDPOINTS, MIN_VERSION, MAX_VERSION)
    check_every_version(OLD_ENDPOINTS, MIN_VERSION, OLD_HIGH)


INDEX_PROBES = [
    [("bogus", "1")],
    [("limit", "1")],
    [("limit", "x")],
    [("limit", "-1")],
    [("with_servers", "true")],
    [("with_servers", "maybe")],
    [("with_servers", "1"), ("with_servers", "0")],
    [("hypervisor_hostname_pattern", "compute")],
    [("hypervisor_hostname_pattern", "a b")],
    [("hypervisor_hostname_pattern", "")],
]
SHOW_PROBES = [
    [("bogus", "1")],
    [("with_servers", "true")],
    [("with_servers", "maybe")],
]


def _query_cases():
    for version in N.boundaries(ENDPOINTS, MIN_VERSION, MAX_VERSION, N.QUERY):
        for method, path in (("index", "/v2.1/os-hypervisors"),
                             ("detail", "/v2.1/os-hypervisors/detail"),
                             ("show", _show_paths(version)[0])):
            yield pytest.param(version, method, path,
                               id=f"{N.format_version(version)}-{method}")


@pytest.mark.parametrize("version, method, path", list(_query_cases()))
def test_query_parameters_as_nova_validates_them(hypervisors_api, version, method, path):
    probes = SHOW_PROBES if method == "show" else INDEX_PROBES
    check_query(hypervisors_api, "hypervisors", method, version, path, probes, "admin")
