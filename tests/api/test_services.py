"""GET /os-services: every cell's services from the replica in one statement (admins
only), Nova's fields per microversion (2.11 forced_down, 2.53 uuid ids), host= and
binary= filters, Nova's API services left out, and up or down judged from the last
report's age when read (the replica's clock)."""

from __future__ import annotations

import datetime

import pytest

from tests.api import entities as E
from tests.api.conftest import ADMIN, MEMBER, serving


def _ago(seconds: float) -> str:
    return (datetime.datetime.utcnow() - datetime.timedelta(seconds=seconds)).strftime(
        "%Y-%m-%dT%H:%M:%S.%f")


SERVICES = {
    "cell1": [E.service(1, "compute-1"),
              E.service(2, "compute-2", disabled=True, disabled_reason="maintenance"),
              E.service(3, "compute-3", heartbeat=_ago(86400), updated_at=_ago(86400)),
              E.service(4, "compute-4", forced_down=True),
              E.service(5, "control-1", "nova-conductor"),
              E.service(6, "control-1", "nova-osapi_compute"),
              E.service(7, "control-1", "nova-metadata")],
    "cell2": [E.service(1, "compute-9", updated_at=None),
              E.service(2, "compute-8", heartbeat=_ago(86400), down_after=0)],
}


@pytest.fixture(scope="module")
def services_api(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("services") / "replica.db")
    E.fill_replica(path, [], [E.flavor()], {"cell1": 1, "cell2": 1, "flavors": 5})
    for cell, services in SERVICES.items():
        E.fill_kind(path, "service", cell, services)
    with serving(path) as client:
        yield client


def _list(api, query="", version="2.1"):
    response = api.get(f"/v2.1/os-services{query}", token=ADMIN, version=version)
    assert response.status == 200, response.body
    assert response.statements == 1
    return response.json()["services"]


def test_list_in_cell_and_row_order_without_api_services(services_api):
    got = _list(services_api)
    assert [(s["host"], s["binary"]) for s in got] == [
        ("compute-1", "nova-compute"), ("compute-2", "nova-compute"),
        ("compute-3", "nova-compute"), ("compute-4", "nova-compute"),
        ("control-1", "nova-conductor"), ("compute-9", "nova-compute"),
        ("compute-8", "nova-compute")]
    first = SERVICES["cell1"][0]
    assert got[0] == {"binary": "nova-compute", "host": "compute-1", "id": 1, "zone": "nova",
                      "status": "enabled", "state": "up",
                      "updated_at": first["updated_at"], "disabled_reason": None}
    assert list(got[0]) == ["binary", "host", "id", "zone", "status", "state", "updated_at",
                            "disabled_reason"]
    assert got[1]["status"] == "disabled" and got[1]["disabled_reason"] == "maintenance"
    assert got[4]["zone"] == "internal"
    assert got[5]["updated_at"] is None


def test_state_is_the_reports_age_or_forced_down(services_api):
    state = {s["host"]: s["state"] for s in _list(services_api)}
    assert state["compute-1"] == "up"
    assert state["compute-3"] == "down"        # last report an hour ago
    assert state["compute-4"] == "down"        # forced down
    assert state["compute-8"] == "up"          # its publisher applies no liveness rule


def test_microversions(services_api):
    v211 = _list(services_api, version="2.11")
    assert [s["forced_down"] for s in v211][:4] == [False, False, False, True]
    assert v211[0]["id"] == 1
    v253 = _list(services_api, version="2.53")
    assert v253[0]["id"] == SERVICES["cell1"][0]["uuid"] and "forced_down" in v253[0]
    assert "forced_down" not in _list(services_api, version="2.10")[0]


def test_filters(services_api):
    assert [s["id"] for s in _list(services_api, "?host=compute-2")] == [2]
    assert [s["host"] for s in _list(services_api, "?binary=nova-conductor")] == ["control-1"]
    assert _list(services_api, "?binary=nova-osapi_compute") == []
    assert [s["id"] for s in _list(services_api, "?host=control-1&binary=nova-conductor")] \
        == [5]
    assert len(_list(services_api, "?host=")) == 7                  # empty: no filter
    assert [s["host"] for s in _list(services_api, "?host=x&host=compute-9")] == ["compute-9"]
    assert len(_list(services_api, "?bogus=1", version="2.74")) == 7
    r = services_api.get("/v2.1/os-services?bogus=1", token=ADMIN, version="2.75")
    assert r.status == 400
    assert r.json()["badRequest"]["message"] == (
        "Additional properties are not allowed ('bogus' was unexpected)")


def test_members_get_novas_403(services_api):
    r = services_api.get("/v2.1/os-services", token=MEMBER)
    assert r.status == 403
    assert r.json() == {"forbidden": {"code": 403, "message": "Policy doesn't allow "
                                      "os_compute_api:os-services:list to be performed."}}
    assert services_api.get("/v2.1/os-services/x", token=ADMIN).status == 404
