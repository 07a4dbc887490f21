"""A member's marker must be one of the member's own servers: another project's server
is "not found", as any server the caller cannot see, so a page cannot reveal where a
foreign server falls in the sort order."""

from __future__ import annotations

import pytest

from tests.api import entities as E
from tests.api.conftest import ADMIN, MEMBER, OTHER

FOREIGN = E.server(100, project_id=E.OTHER_PROJECT)["uuid"]     # OTHER_PROJECT's
OWN = E.server(5)["uuid"]


@pytest.mark.parametrize("path", ["/v2.1/servers", "/v2.1/servers/detail",
                                  f"/v2.1/{E.PROJECT}/servers"])
def test_another_projects_server_is_no_marker_for_a_member(api, path):
    r = api.get(f"{path}?marker={FOREIGN}&sort_key=display_name&sort_dir=asc", token=MEMBER)
    assert r.status == 400
    assert r.json() == {"badRequest": {"code": 400,
                                       "message": f"marker [{FOREIGN}] not found"}}
    assert r.statements <= 1


def test_the_members_own_server_is_a_marker(api):
    r = api.get(f"/v2.1/servers?marker={OWN}", token=MEMBER)
    assert r.status == 200
    assert OWN not in [s["id"] for s in r.json()["servers"]]


def test_the_owner_of_that_server_may_use_it(api):
    r = api.get(f"/v2.1/servers?marker={FOREIGN}", token=OTHER)
    assert r.status == 200


def test_an_admin_marker_is_looked_up_in_every_project(api):
    """Nova looks an admin's marker up elevated (any project), all_tenants or not."""
    assert api.get(f"/v2.1/servers?marker={FOREIGN}", token=ADMIN).status == 200
    assert api.get(f"/v2.1/servers?marker={FOREIGN}&all_tenants=1",
                   token=ADMIN).status == 200
