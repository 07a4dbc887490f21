"""GET /servers/{id}/os-instance-actions[/{request_id}]: Nova's instance actions from the
replica, one statement each: order, 2.58 paging and changes-since, 2.66 changes-before,
events by audience and microversion (2.51, 2.62, 2.84), tenancy, deleted servers (2.21)."""

from __future__ import annotations

import hashlib
from urllib.parse import parse_qs, urlsplit

import pytest

from replica import render
from tests.api import entities as E
from tests.api.conftest import ADMIN, MEMBER, OTHER, serving

SERVER = E.server(0)
DELETED = E.server(11, deleted=True, vm_state="deleted", deleted_at=E.stamp(4))
FOREIGN = E.server(100, project_id=E.OTHER_PROJECT, user_id="other")
EVENTS = [E.action_event("compute_stop_instance", 5, result="Error",
                         traceback="Traceback (most recent call last): ...",
                         details="the hypervisor refused"),
          E.action_event("conductor_stop", 4, host=None)]
ACTIONS = [E.instance_action(SERVER, 1, "create"),
           E.instance_action(SERVER, 2, "stop", events=EVENTS, message="Error"),
           E.instance_action(SERVER, 3, "start", updated_at=None),
           E.instance_action(DELETED, 4, "delete"),
           E.instance_action(FOREIGN, 5, "create")]
BASE = f"/v2.1/servers/{SERVER['uuid']}/os-instance-actions"


@pytest.fixture(scope="module")
def actions_api(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("actions") / "replica.db")
    E.fill_replica(path, [("cell1", SERVER), ("cell1", DELETED), ("cell2", FOREIGN)], [],
                   {"cell1": 10, "cell2": 5, "flavors": 1})
    E.fill_instance_actions(path, [("cell2" if a is ACTIONS[4] else "cell1", a)
                                   for a in ACTIONS])
    # a client without a token (openstack --os-auth-type none) is a member of PROJECT
    with serving(path, env={"NOAUTH_DEFAULT": MEMBER}) as client:
        yield client


def _get(api, path, token=MEMBER, version="2.1"):
    response = api.get(path, token=token, version=version)
    if response.status in (200, 404) and "not-a-uuid" not in path:
        assert response.statements == 1, path       # found or not: one statement
    return response


def test_list_is_newest_first_with_nova_fields(actions_api):
    body = _get(actions_api, BASE).json()
    assert [a["action"] for a in body["instanceActions"]] == ["start", "stop", "create"]
    assert list(body["instanceActions"][1]) == ["action", "instance_uuid", "request_id",
                                                "user_id", "project_id", "start_time",
                                                "message"]
    assert body["instanceActions"][1]["message"] == "Error"
    assert "links" not in body
    at_258 = _get(actions_api, BASE, version="2.58").json()["instanceActions"]
    assert at_258[0]["updated_at"] is None
    assert at_258[1]["updated_at"] == ACTIONS[1]["updated_at"]


def test_paging_from_2_58(actions_api):
    first = _get(actions_api, BASE + "?limit=2", version="2.58").json()
    assert [a["action"] for a in first["instanceActions"]] == ["start", "stop"]
    (link,) = first["links"]
    assert link["rel"] == "next"
    query = parse_qs(urlsplit(link["href"]).query)
    assert query == {"limit": ["2"], "marker": [ACTIONS[1]["request_id"]]}
    assert urlsplit(link["href"]).path == BASE
    rest = _get(actions_api, f"{BASE}?limit=2&marker={ACTIONS[1]['request_id']}",
                version="2.58").json()
    assert [a["action"] for a in rest["instanceActions"]] == ["create"]
    assert "links" not in rest
    # before 2.58 paging parameters are ignored, as Nova's schema had none
    assert len(_get(actions_api, BASE + "?limit=1").json()["instanceActions"]) == 3


def test_paging_errors(actions_api):
    bad = _get(actions_api, BASE + "?marker=req-nope", version="2.58")
    assert bad.status == 400
    assert bad.json() == {"badRequest": {"code": 400,
                                         "message": "Marker None could not be found."}}
    # a limit of 0 answers [] before Nova looks the marker up
    nothing = _get(actions_api, BASE + "?marker=req-nope&limit=0", version="2.58")
    assert nothing.status == 200 and nothing.json()["instanceActions"] == []
    assert _get(actions_api, BASE + "?limit=-1", version="2.58").status == 400
    assert _get(actions_api, BASE + "?foo=1", version="2.58").status == 400
    assert _get(actions_api, BASE + "?changes-before=2026-01-01T00:00:00Z",
                version="2.65").status == 400
    since_after_before = _get(actions_api, BASE + "?changes-since=2026-11-05T00:00:00Z"
                              "&changes-before=2026-11-01T00:00:00Z", version="2.66")
    assert since_after_before.status == 400
    assert _get(actions_api, BASE + "?limit=1&limit=2", version="2.58").status == 400


def test_changes_since_and_before(actions_api):
    since = ACTIONS[1]["updated_at"][:19] + "Z"
    got = _get(actions_api, f"{BASE}?changes-since={since}", version="2.58").json()
    assert [a["action"] for a in got["instanceActions"]] == ["stop"]   # NULL updated_at out
    before = ACTIONS[0]["updated_at"][:19] + "Z"
    got = _get(actions_api, f"{BASE}?changes-before={before}", version="2.66").json()
    assert [a["action"] for a in got["instanceActions"]] == ["create"]     # <=, inclusive


def _show(api, token, version, request_id=ACTIONS[1]["request_id"]):
    return _get(api, f"{BASE}/{request_id}", token, version)


def test_show_events_by_audience_and_version(actions_api):
    member_21 = _show(actions_api, MEMBER, "2.1").json()["instanceAction"]
    assert "events" not in member_21 and "updated_at" not in member_21
    member_251 = _show(actions_api, MEMBER, "2.51").json()["instanceAction"]
    assert [list(e) for e in member_251["events"]] == [
        ["event", "start_time", "finish_time", "result"]] * 2
    assert member_251["events"][0]["event"] == "compute_stop_instance"
    member_262 = _show(actions_api, MEMBER, "2.62").json()["instanceAction"]
    host_id = hashlib.sha224((E.PROJECT + "compute-1").encode()).hexdigest()
    assert [e.get("hostId") for e in member_262["events"]] == [host_id, ""]
    assert all("host" not in e and "traceback" not in e for e in member_262["events"])
    member_284 = _show(actions_api, MEMBER, "2.84").json()["instanceAction"]
    assert all("details" not in e for e in member_284["events"])
    admin_21 = _show(actions_api, ADMIN, "2.1").json()["instanceAction"]
    assert admin_21["events"][0]["traceback"].startswith("Traceback")
    assert "host" not in admin_21["events"][0]
    admin_262 = _show(actions_api, ADMIN, "2.62").json()["instanceAction"]
    assert list(admin_262["events"][0]) == ["event", "start_time", "finish_time", "result",
                                            "traceback", "host", "hostId"]
    admin_284 = _show(actions_api, ADMIN, "2.84").json()["instanceAction"]
    assert admin_284["events"][0]["details"] == "the hypervisor refused"
    assert admin_284["updated_at"] == render.plain_time(ACTIONS[1]["updated_at"])
    assert admin_284 == render.render_instance_action_document(
        ACTIONS[1], render.InstanceActionView(84, True))


def test_show_missing(actions_api):
    gone = _show(actions_api, MEMBER, "2.1", "req-nope")
    assert gone.status == 404
    assert gone.json()["itemNotFound"]["message"] == "Action req-nope not found"
    no_server = _get(actions_api, "/v2.1/servers/not-a-uuid/os-instance-actions")
    assert no_server.status == 404
    assert _show(actions_api, MEMBER, "2.102", "x?foo=1").status in (400, 404)


def test_tenancy(actions_api):
    foreign = f"/v2.1/servers/{FOREIGN['uuid']}/os-instance-actions"
    assert _get(actions_api, foreign, MEMBER).status == 404
    assert _get(actions_api, f"{foreign}/{ACTIONS[4]['request_id']}", MEMBER).status == 404
    assert _get(actions_api, BASE, OTHER).status == 404
    assert _get(actions_api, f"{BASE}/{ACTIONS[0]['request_id']}", OTHER).status == 404
    own = _get(actions_api, foreign, f"other:{E.OTHER_PROJECT}").json()
    assert [a["action"] for a in own["instanceActions"]] == ["create"]
    admin = _get(actions_api, foreign, ADMIN).json()
    assert [a["action"] for a in admin["instanceActions"]] == ["create"]


def test_a_deleted_servers_actions_from_2_21(actions_api):
    path = f"/v2.1/servers/{DELETED['uuid']}/os-instance-actions"
    assert _get(actions_api, path, version="2.20").status == 404
    got = _get(actions_api, path, version="2.21").json()
    assert [a["action"] for a in got["instanceActions"]] == ["delete"]
    assert _get(actions_api, f"{path}/{ACTIONS[3]['request_id']}", version="2.21").status == 200


def test_openstack_server_event_list_and_show(actions_api):
    """The clients: `openstack server event list` / `show` read these routes."""
    import os
    import subprocess

    from tests.conftest import VENV_BIN
    base = [os.path.join(VENV_BIN, "openstack"), "--os-auth-type", "none", "--os-endpoint",
            f"http://127.0.0.1:{actions_api.port}/v2.1", "--os-identity-api-version", "3",
            "--os-compute-api-version", "2.84"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    out = subprocess.run(base + ["server", "event", "list", SERVER["uuid"], "-f", "value",
                                 "-c", "Request ID", "-c", "Action"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert [line.split() for line in out.stdout.strip().splitlines()] == [
        [ACTIONS[2]["request_id"], "start"], [ACTIONS[1]["request_id"], "stop"],
        [ACTIONS[0]["request_id"], "create"]]
    out = subprocess.run(base + ["server", "event", "show", SERVER["uuid"],
                                 ACTIONS[1]["request_id"], "-f", "json"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert '"compute_stop_instance"' in out.stdout
