"""GET /servers/{id}/os-instance-actions[/{request_id}] against Nova's own response and
query schemas (nova_schemas.NOVA_VERSION), at every microversion where one of them
starts or ends and at both ends of the appliance's range, as an admin and as a member."""

from __future__ import annotations

import pytest

from tests.api import entities as E
from tests.api.conftest import serving
from tests.conformance import nova_schemas as N
from tests.conformance.checks import check_body, check_every_version, check_query
from tests.conformance.replicas import ROLES
from tests.conformance.test_nova_schemas import MAX_VERSION, MIN_VERSION

SERVER = E.server(1)
# A nova-manage action has no user or project; events of periodic tasks none either.
ACTIONS = [
    E.instance_action(SERVER, 1, "create"),
    E.instance_action(SERVER, 2, "stop", message="Error", events=[
        E.action_event("compute_stop_instance", 3, result="Error", traceback="Traceback...",
                       details="refused"),
        E.action_event("conductor_stop", 2, finish_time=None, result=None)]),
    E.instance_action(SERVER, 3, "migrate", user_id=None, project_id=None, updated_at=None,
                      events=[]),
]
BASE = f"/v2.1/servers/{SERVER['uuid']}/os-instance-actions"
ENDPOINTS = [("instance_actions", "index"), ("instance_actions", "show")]


@pytest.fixture(scope="module")
def actions_api(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("actions-conformance") / "replica.db")
    E.fill_replica(path, [("cell1", SERVER)], [], {"cell1": 3, "flavors": 1})
    E.fill_instance_actions(path, [("cell1", a) for a in ACTIONS])
    with serving(path) as client:
        yield client


def _cases():
    for version in N.boundaries(ENDPOINTS, MIN_VERSION, MAX_VERSION):
        for role in ROLES:
            paths = [("index", BASE), ("index", BASE + "?limit=2")]
            paths += [("show", f"{BASE}/{a['request_id']}") for a in ACTIONS]
            for method, path in paths:
                yield pytest.param(version, role, method, path,
                                   id=f"{N.format_version(version)}-{role}-{path}")


@pytest.mark.parametrize("version, role, method, path", list(_cases()))
def test_body_matches_nova_schema(actions_api, version, role, method, path):
    check_body(actions_api, "instance_actions", method, version, path, role)


def test_every_version_has_one_nova_schema_per_method():
    check_every_version(ENDPOINTS, MIN_VERSION, MAX_VERSION)


PROBES = [
    [("bogus", "1")],
    [("limit", "2")],
    [("limit", "x")],
    [("limit", "-1")],
    [("limit", "1"), ("limit", "2")],
    [("marker", ACTIONS[1]["request_id"])],
    [("changes-since", "2026-11-01T00:00:00Z")],
    [("changes-since", "yesterday")],
    [("changes-before", "2026-11-30T00:00:00Z")],
]


def _query_cases():
    for version in N.boundaries(ENDPOINTS, MIN_VERSION, MAX_VERSION, N.QUERY):
        for method, path in (("index", BASE), ("show", f"{BASE}/{ACTIONS[0]['request_id']}")):
            yield pytest.param(version, method, path,
                               id=f"{N.format_version(version)}-{method}")


@pytest.mark.parametrize("version, method, path", list(_query_cases()))
def test_query_parameters_as_nova_validates_them(actions_api, version, method, path):
    check_query(actions_api, "instance_actions", method, version, path, PROBES, "member")
