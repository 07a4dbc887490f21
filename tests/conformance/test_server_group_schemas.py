"""GET /os-server-groups and /os-server-groups/{id} against Nova's own response and query
schemas (nova_schemas.NOVA_VERSION), at every microversion where one of them starts or
ends and at both ends of the appliance's range, as a member and an admin (with
all_projects), over groups of every policy, with rules, members live and deleted."""

from __future__ import annotations

import pytest

from tests.api import entities as E
from tests.api.conftest import serving
from tests.conformance import nova_schemas as N
from tests.conformance.checks import check_body, check_every_version, check_query
from tests.conformance.replicas import ROLES
from tests.conformance.test_nova_schemas import MAX_VERSION, MIN_VERSION

ENDPOINTS = [("server_groups", "index"), ("server_groups", "show")]
LIVE, GONE = E.server(1), E.server(2, deleted=True, vm_state="deleted", deleted_at=E.stamp(4))
GROUPS = [E.server_group(1, members=[LIVE["uuid"], GONE["uuid"]]),
          E.server_group(2, policy="affinity"),
          E.server_group(3, project_id=E.OTHER_PROJECT, user_id="other",
                         rules={"max_server_per_host": 2})]


@pytest.fixture(scope="module")
def groups_api(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("server-groups-conformance") / "replica.db")
    E.fill_replica(path, [("cell1", LIVE), ("cell1", GONE)], [E.flavor()],
                   {"cell1": 2, "flavors": 3})
    E.fill_server_groups(path, GROUPS)
    with serving(path) as client:
        yield client


def _cases():
    for version in N.boundaries(ENDPOINTS, MIN_VERSION, MAX_VERSION):
        # soft-affinity and soft-anti-affinity exist from 2.15: the member's groups
        # are affinity and anti-affinity, valid at every version
        for role in ROLES:
            paths = [("index", "/v2.1/os-server-groups"),
                     ("index", "/v2.1/os-server-groups?limit=1&offset=1"),
                     ("show", f"/v2.1/os-server-groups/{GROUPS[0]['group_key']}")]
            if role == "admin":
                paths += [("index", "/v2.1/os-server-groups?all_projects=1"),
                          ("show", f"/v2.1/os-server-groups/{GROUPS[2]['group_key']}")]
            for method, path in paths:
                yield pytest.param(version, role, method, path,
                                   id=f"{N.format_version(version)}-{role}-{path}")


@pytest.mark.parametrize("version, role, method, path", list(_cases()))
def test_body_matches_nova_schema(groups_api, version, role, method, path):
    check_body(groups_api, "server_groups", method, version, path, role)


def test_every_version_has_one_nova_schema():
    check_every_version(ENDPOINTS, MIN_VERSION, MAX_VERSION)


INDEX_PROBES = [
    [("bogus", "1")], [("limit", "-1")], [("limit", "")], [("limit", "x")],
    [("offset", "-3")], [("limit", "1"), ("limit", "y")], [("limit", "2"), ("offset", "1")],
    [("all_projects", "True")], [("limit", "0")],
]


@pytest.mark.parametrize("version", [pytest.param(v, id=N.format_version(v)) for v in
                                     N.boundaries(ENDPOINTS, MIN_VERSION, MAX_VERSION,
                                                  N.QUERY)])
def test_query_parameters_as_nova_validates_them(groups_api, version):
    check_query(groups_api, "server_groups", "index", version, "/v2.1/os-server-groups",
                INDEX_PROBES, "admin")
    check_query(groups_api, "server_groups", "show", version,
                f"/v2.1/os-server-groups/{GROUPS[0]['group_key']}", [[("bogus", "1")]],
                "admin")
