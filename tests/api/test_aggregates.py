"""GET /os-aggregates[/{id}]: Nova's host aggregates from the replica in one statement
(admins only; 2.41 uuid; availability_zone from the metadata), and the zones they give
compute services in GET /os-services, kept up to date as aggregates change."""

from __future__ import annotations

import pytest

from replica import render
from replica.store.connection import open_writer
from tests.api import entities as E
from tests.api.conftest import ADMIN, MEMBER, serving

AGGREGATES = [E.aggregate(1, "az-west", ["compute-1", "compute-2"],
                          {"availability_zone": "west", "ssd": "true"}),
              E.aggregate(2, "gpus", ["compute-2"], {"gpu": "yes"}),
              E.aggregate(3, "empty", [], {}, updated_at=E.stamp(3, 1))]
SERVICES = [E.service(1, "compute-1"), E.service(2, "compute-2"), E.service(3, "compute-3"),
            E.service(4, "compute-1", "nova-conductor")]


@pytest.fixture(scope="module")
def replica(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("aggregates") / "replica.db")
    E.fill_replica(path, [], [E.flavor()], {"cell1": 1, "flavors": 5})
    E.fill_kind(path, "aggregate", "flavors", AGGREGATES)
    E.fill_kind(path, "service", "cell1", SERVICES)
    return path


@pytest.fixture(scope="module")
def aggregates_api(replica):
    with serving(replica) as client:
        yield client


def _get(api, path, version="2.1", token=ADMIN):
    response = api.get(path, token=token, version=version)
    assert response.statements == 1, path
    return response


def test_list_and_show(aggregates_api):
    r = _get(aggregates_api, "/v2.1/os-aggregates")
    assert r.status == 200
    listed = r.json()["aggregates"]
    assert listed == [render.render_aggregate_document(a, 1) for a in AGGREGATES]
    assert list(listed[0]) == ["id", "name", "hosts", "metadata", "created_at", "updated_at",
                               "deleted_at", "deleted", "availability_zone"]
    assert listed[0]["availability_zone"] == "west" and listed[1]["availability_zone"] is None
    assert listed[0]["created_at"] == AGGREGATES[0]["created_at"]
    v241 = _get(aggregates_api, "/v2.1/os-aggregates", "2.41").json()["aggregates"]
    assert [a["uuid"] for a in v241] == [a["uuid"] for a in AGGREGATES]
    shown = _get(aggregates_api, "/v2.1/os-aggregates/2", "2.41").json()
    assert shown == {"aggregate": render.render_aggregate_document(AGGREGATES[1], 41)}
    assert _get(aggregates_api, "/v2.1/os-aggregates/02").json()["aggregate"]["id"] == 2


def test_faults(aggregates_api):
    r = _get(aggregates_api, "/v2.1/os-aggregates/9")
    assert r.status == 404
    assert r.json()["itemNotFound"]["message"] == "Aggregate 9 could not be found."
    r = aggregates_api.get("/v2.1/os-aggregates/x", token=ADMIN)
    assert r.status == 400
    assert r.json()["badRequest"]["message"] == "Invalid input received: id must be an integer"
    for path, rule in (("/v2.1/os-aggregates", "index"), ("/v2.1/os-aggregates/1", "show")):
        r = aggregates_api.get(path, token=MEMBER)
        assert r.status == 403
        assert r.json()["forbidden"]["message"] == (
            f"Policy doesn't allow os_compute_api:os-aggregates:{rule} to be performed.")
    assert aggregates_api.get("/v2.1/os-aggregates?x=1", token=ADMIN).status == 200
    assert aggregates_api.get("/v2.1/os-aggregates?x=1", token=ADMIN,
                              version="2.102").status == 400
    assert aggregates_api.get("/v2.1/os-aggregates/1/hosts", token=ADMIN).status == 404


def _zones(api):
    services = _get(api, "/v2.1/os-services").json()["services"]
    return {(s["host"], s["binary"]): s["zone"] for s in services}


def test_services_zones_follow_the_aggregates(aggregates_api, replica):
    assert _zones(aggregates_api) == {
        ("compute-1", "nova-compute"): "west", ("compute-2", "nova-compute"): "west",
        ("compute-3", "nova-compute"): "nova", ("compute-1", "nova-conductor"): "internal"}
    # the writer's upsert and delete keep the hosts' zones (triggers in its transaction)
    moved = E.aggregate(1, "az-west", ["compute-3"], {"availability_zone": "east"})
    E.fill_kind(replica, "aggregate", "flavors", [moved])
    assert _zones(aggregates_api)[("compute-3", "nova-compute")] == "east"
    assert _zones(aggregates_api)[("compute-1", "nova-compute")] == "nova"
    conn = open_writer(replica)
    with conn:
        conn.execute("DELETE FROM aggregates WHERE aggregate_key = '1'")
    conn.close()
    assert set(_zones(aggregates_api).values()) == {"nova", "internal"}
