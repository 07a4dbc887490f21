"""GET /os-availability-zone and /detail: zones put together in one statement from
the cells' services and the API database's aggregates, as Nova computes them (the
default zone for a compute host in no zone, "internal" for other services, a zone
available while one of its services is enabled, the detail's liveness judged when
read); the detail is for admins."""

from __future__ import annotations

import pytest

from replica import render
from tests.api import entities as E
from tests.api.conftest import ADMIN, MEMBER, serving

LONG_AGO = "2026-01-01T00:00:00.000000"
SERVICES = [
    ("cell1", E.service(1, "compute-1")),                            # az-east
    ("cell1", E.service(2, "compute-2", forced_down=True)),          # az-east
    ("cell1", E.service(3, "compute-3")),                            # nova
    ("cell2", E.service(4, "compute-4", heartbeat=LONG_AGO)),     # az-west
    ("cell2", E.service(5, "compute-5", disabled=True)),             # az-dark
    ("cell1", E.service(6, "control-1", "nova-scheduler")),          # internal
    ("cell1", E.service(7, "control-1", "nova-conductor", updated_at=None)),
    ("cell1", E.service(8, "control-1", "nova-osapi_compute")),      # internal, hidden
]
AGGREGATES = [E.zoned_aggregate(1, "az-east", ["compute-1", "compute-2"]),
              E.zoned_aggregate(2, "az-west", ["compute-4"]),
              E.zoned_aggregate(3, "az-dark", ["compute-5"]),
              E.zoned_aggregate(4, None, ["compute-3", "compute-4"])]      # no zone


@pytest.fixture(scope="module")
def zones_api(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("zones") / "replica.db")
    E.fill_replica(path, [], [E.flavor()], {"cell1": 1, "cell2": 1, "flavors": 1})
    E.fill_zones(path, SERVICES, AGGREGATES)
    with serving(path, env={"NOAUTH_DEFAULT": MEMBER}) as client:
        yield client


def _get(api, path, token=MEMBER, version="2.1"):
    response = api.get(path, token=token, version=version)
    if response.status == 200:
        assert response.statements == 1, path
    return response


def test_list_hides_internal_and_puts_unavailable_last(zones_api):
    body = _get(zones_api, "/v2.1/os-availability-zone").json()
    assert body == {"availabilityZoneInfo": [
        {"zoneName": "az-east", "zoneState": {"available": True}, "hosts": None},
        {"zoneName": "az-west", "zoneState": {"available": True}, "hosts": None},
        {"zoneName": "nova", "zoneState": {"available": True}, "hosts": None},
        {"zoneName": "az-dark", "zoneState": {"available": False}, "hosts": None}]}


def test_detail_lists_enabled_services_by_host_with_liveness(zones_api):
    body = _get(zones_api, "/v2.1/os-availability-zone/detail", ADMIN).json()
    zones = {z["zoneName"]: z for z in body["availabilityZoneInfo"]}
    assert [z["zoneName"] for z in body["availabilityZoneInfo"]] == [
        "az-east", "az-west", "internal", "nova", "az-dark"]
    east = zones["az-east"]["hosts"]
    assert east["compute-1"]["nova-compute"] == {
        "available": True, "active": True,
        "updated_at": render.plain_time(SERVICES[0][1]["updated_at"])}
    assert east["compute-2"]["nova-compute"]["available"] is False      # forced down
    assert zones["az-west"]["hosts"]["compute-4"]["nova-compute"]["available"] is False
    internal = zones["internal"]["hosts"]
    assert set(internal) == {"control-1"}
    assert set(internal["control-1"]) == {"nova-scheduler", "nova-conductor"}
    assert internal["control-1"]["nova-conductor"]["updated_at"] is None
    assert zones["az-dark"] == {"zoneName": "az-dark", "zoneState": {"available": False},
                                "hosts": None}


def test_detail_is_for_admins(zones_api):
    refused = _get(zones_api, "/v2.1/os-availability-zone/detail")
    assert refused.status == 403
    assert refused.json() == {"forbidden": {"code": 403, "message": (
        "Policy doesn't allow os_compute_api:os-availability-zone:detail to be performed.")}}


def test_query_refused_from_2_102(zones_api):
    assert _get(zones_api, "/v2.1/os-availability-zone?x=1", version="2.101").status == 200
    bad = _get(zones_api, "/v2.1/os-availability-zone?x=1", version="2.102")
    assert bad.status == 400
    assert "Additional properties are not allowed" in bad.json()["badRequest"]["message"]
    assert _get(zones_api, "/v2.1/os-availability-zone/detail?x=1", ADMIN,
                version="2.102").status == 400


def test_empty_replica_lists_no_zone(tmp_path):
    path = str(tmp_path / "replica.db")
    E.fill_replica(path, [], [E.flavor()], {"cell1": 1, "flavors": 1})
    with serving(path, env={"NOAUTH_DEFAULT": MEMBER}) as client:
        assert _get(client, "/v2.1/os-availability-zone").json() == {
            "availabilityZoneInfo": []}
        assert _get(client, "/v2.1/os-availability-zone/detail", ADMIN).json() == {
            "availabilityZoneInfo": []}


def test_the_default_zone_is_a_setting(tmp_path):
    """Nova's default_availability_zone, as the setting of the same name gives it, in
    the availability zones and in os-services."""
    path = str(tmp_path / "replica.db")
    E.fill_replica(path, [], [E.flavor()], {"cell1": 1, "flavors": 1})
    E.fill_zones(path, SERVICES[:1] + SERVICES[2:3], AGGREGATES[:1])
    with serving(path, env={"NOAUTH_DEFAULT": MEMBER,
                            "DEFAULT_AVAILABILITY_ZONE": "az-default"}) as client:
        assert [z["zoneName"] for z in _get(client, "/v2.1/os-availability-zone").json()[
            "availabilityZoneInfo"]] == ["az-default", "az-east"]
        # and os-services names the same zone for a compute host in no zoned aggregate
        zones = {s["host"]: s["zone"] for s in _get(client, "/v2.1/os-services", ADMIN).json()[
            "services"] if s["binary"] == "nova-compute"}
        assert "az-default" in zones.values() and "nova" not in zones.values()
