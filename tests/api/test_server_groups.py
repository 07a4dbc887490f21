"""GET /os-server-groups and /os-server-groups/{id}: a project's groups from the replica,
one statement each: members as Nova shows them (servers neither deleted nor
soft-deleted), policies and
metadata before 2.64, policy and rules from it, project and user from 2.13; limit and
offset; all_projects for admins; another project's group is not found (except by an
admin)."""

from __future__ import annotations

import pytest

from replica import render
from tests.api import entities as E
from tests.api.conftest import ADMIN, MEMBER, OTHER, serving

LIVE = E.server(1)
SOFT = E.server(2, vm_state="soft-delete")
GONE = E.server(3, deleted=True, vm_state="deleted", deleted_at=E.stamp(4))
UNKNOWN = "0b5d2c72-12cc-4ba6-a8d7-3ff5cc1d8cb8"       # no such server
MINE = [E.server_group(1, members=[LIVE["uuid"], GONE["uuid"], UNKNOWN, SOFT["uuid"]]),
        E.server_group(2, policy="soft-affinity", rules={}),
        E.server_group(4, policy="anti-affinity", rules={"max_server_per_host": 2},
                       name="spread two"),
        E.server_group(5, policy=None)]
THEIRS = [E.server_group(3, project_id=E.OTHER_PROJECT, user_id="other")]


@pytest.fixture(scope="module")
def groups_api(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("server-groups") / "replica.db")
    E.fill_replica(path, [("cell1", LIVE), ("cell1", SOFT), ("cell1", GONE)], [E.flavor()],
                   {"cell1": 3, "flavors": 5})
    E.fill_server_groups(path, MINE + THEIRS)
    with serving(path, env={"NOAUTH_DEFAULT": MEMBER}) as client:
        yield client


def _get(api, path, token=MEMBER, version="2.1"):
    response = api.get(path, token=token, version=version)
    if response.status in (200, 404):
        assert response.statements == 1, path
    return response


def _ids(body):
    return [g["id"] for g in body["server_groups"]]


def test_list_is_the_projects_own_by_id(groups_api):
    body = _get(groups_api, "/v2.1/os-server-groups").json()
    assert _ids(body) == [g["group_key"] for g in MINE]
    first = body["server_groups"][0]
    assert first == {"id": MINE[0]["group_key"], "name": "group-1",
                     "policies": ["anti-affinity"], "metadata": {},
                     "members": [LIVE["uuid"]]}
    assert body["server_groups"][3]["policies"] == []
    other = _get(groups_api, "/v2.1/os-server-groups", OTHER).json()
    assert _ids(other) == [THEIRS[0]["group_key"]]


def test_versions_change_the_document(groups_api):
    v213 = _get(groups_api, "/v2.1/os-server-groups", version="2.13").json()
    assert v213["server_groups"][0]["project_id"] == E.PROJECT
    assert v213["server_groups"][0]["user_id"] == "fake"
    v264 = _get(groups_api, "/v2.1/os-server-groups", version="2.64").json()["server_groups"]
    assert v264[2] == render.render_server_group(MINE[2], 64, [])
    assert v264[2]["rules"] == {"max_server_per_host": 2} and "policies" not in v264[2]
    assert v264[0]["policy"] == "anti-affinity" and "metadata" not in v264[0]


def test_limit_offset_and_all_projects(groups_api):
    assert _ids(_get(groups_api, "/v2.1/os-server-groups?limit=2&offset=1").json()) == [
        MINE[1]["group_key"], MINE[2]["group_key"]]
    assert len(_ids(_get(groups_api, "/v2.1/os-server-groups?limit=0").json())) == 4
    assert _ids(_get(groups_api, "/v2.1/os-server-groups?offset=9").json()) == []
    every = _get(groups_api, "/v2.1/os-server-groups?all_projects=True", ADMIN).json()
    assert _ids(every) == [g["group_key"] for g in sorted(MINE + THEIRS,
                                                           key=lambda g: g["id"])]
    # a member asking for every project gets its own, as Nova answers
    assert len(_ids(_get(groups_api, "/v2.1/os-server-groups?all_projects=1").json())) == 4
    bad = _get(groups_api, "/v2.1/os-server-groups?limit=-1")
    assert bad.status == 400
    assert bad.json()["badRequest"]["message"] == (
        "Invalid input for query parameters limit. Value: -1. '-1' does not match "
        "'^[0-9]*$'")
    assert _get(groups_api, "/v2.1/os-server-groups?bogus=1", version="2.74").status == 200
    assert _get(groups_api, "/v2.1/os-server-groups?bogus=1", version="2.75").status == 400


def test_show(groups_api):
    mine = MINE[0]["group_key"]
    got = _get(groups_api, f"/v2.1/os-server-groups/{mine}", version="2.64").json()
    assert got == {"server_group": render.render_server_group(MINE[0], 64, [LIVE["uuid"]])}
    theirs = THEIRS[0]["group_key"]
    missing = _get(groups_api, f"/v2.1/os-server-groups/{theirs}")
    assert missing.status == 404
    assert missing.json()["itemNotFound"]["message"] == (
        f"Instance group {theirs} could not be found.")
    assert _get(groups_api, f"/v2.1/os-server-groups/{theirs}", ADMIN).status == 200
    assert _get(groups_api, f"/v2.1/os-server-groups/{mine}?x=1", version="2.101").status == 200
    assert _get(groups_api, f"/v2.1/os-server-groups/{mine}?x=1", version="2.102").status == 400
