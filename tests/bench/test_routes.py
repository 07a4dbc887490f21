"""The routes beyond servers (bench/routes.py) on a tiny size: every route of the table
against the constant body and, where it answers it, the normalized way, then at two
replica sizes; the figures are there and numeric, the normalized way answers what the
appliance answers. Speeds are not checked."""

from __future__ import annotations

import json
import math

import pytest

from tests.bench import needs_wrk

from bench import profiles, routes, runner

pytestmark = needs_wrk

TINY_ROUTES = profiles.QUICK.shrunk(
    name="tiny-routes", read_servers=240, read_workers=(1,), read_duration_s=1.0,
    scaling_sizes=(120, 240), scaling_connections=2, scaling_duration_s=1.0,
    route_keys=("flavors_detail", "flavor", "keypairs", "limits", "quota_detail", "zones_detail",
                "server_group", "services", "hypervisors_detail"),
    route_connections=(2,), projects=4)


def _numeric(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@pytest.fixture(scope="module")
def document(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "latest.json"
    runner.run(TINY_ROUTES, str(out), only=("routes",), log=lambda text: None)
    return json.loads(out.read_text())


def test_every_route_against_its_baselines(document):
    scenario = document["scenarios"]["routes"]
    assert scenario["status"] == "ok", scenario["reason"]
    figures = {f["name"]: f for f in scenario["figures"]}
    for route in routes.routes_here(TINY_ROUTES.route_keys):
        constant = figures[f"{route.label} w1 c2 vs constant body"]
        assert _numeric(constant["value"]) and _numeric(constant["ratio"])
        assert constant["budget"] is None          # budgets hold at 1 and 8 connections
        assert len(constant["details"]["round_ratios"]) == 1    # one round off budget
        assert (f"{route.label} w1 c2 vs normalized" in figures) == route.normalized
        for size in (120, 240):
            assert _numeric(figures[f"{route.label} @ {size} servers"]["value"])
        # an answer that grows with the cloud is held against the constant body of itself
        # at each size, not against its smaller self
        largest = figures[f"{route.label} @ 240 servers"]
        assert (largest["budget"] is None) == route.per_host
        # ... and the others against the smallest size measured beside the largest
        assert largest["baseline_name"] == ("@120" if route.per_host else "@120 beside")
        for size in (120, 240):
            grown = figures.get(f"{route.label} @ {size} servers vs constant body")
            assert (grown is not None) == route.per_host
            if grown is not None:
                assert _numeric(grown["ratio"]) and grown["budget"] is not None
                assert grown["details"]["body_bytes"] > 0
    runs = [r for r in scenario["runs"] if r["kind"] == "wrk"]
    assert {r["server"] for r in runs} == {"appliance", "constant", "normalized"}
    # at each scaling size an answer that grows with the cloud goes to the constant body
    # of itself right after the appliance (back to back, as the pair stack's runs)
    per_host = {r.endpoint.key for r in routes.routes_here(TINY_ROUTES.route_keys)
                if r.per_host}
    for size in (120, 240):
        for route_key in per_host:
            at = max(i for i, r in enumerate(runs) if r.get("servers") == size
                     and r["endpoint"] == route_key and r["server"] == "appliance")
            assert runs[at + 1]["server"] == "constant" \
                and runs[at + 1]["endpoint"] == route_key, (size, route_key)
    for run in runs:
        assert run["requests"] > 0 and run["error_count"] == 0, run


def test_the_table_is_one_line_per_route_of_a_known_kind():
    from replica import kinds
    assert len({r.key for r in routes.ROUTES}) == len(routes.ROUTES)
    for route in routes.ROUTES:
        assert route.path.startswith("/v2.1/") and route.vs_constant in (routes.ONE,
                                                                         routes.LIST)
    # every kind the replica answers reads of beyond servers has a route
    assert {k for r in routes.routes_here() for k in r.kinds} >= {
        name for name in kinds.KINDS if name not in ("server", "instance_action")}
    # the admin-only routes are asked with the admin's token
    admin = {r.key for r in routes.ROUTES if r.admin}
    assert admin == {"flavor_access", "zones_detail", "services", "aggregates", "aggregate",
                     "hypervisors", "hypervisors_detail", "hypervisor"}
    assert all(r.headers == routes.ADMIN_TOKEN for r in routes.ROUTES if r.admin)
    # the answers with an item per host of the cloud
    assert {r.key for r in routes.ROUTES if r.per_host} == {
        "zones_detail", "services", "hypervisors", "hypervisors_detail"}


def test_the_normalized_way_answers_every_route_as_the_appliance(tmp_path):
    """On one stack: every route the normalized way answers gives the same document as
    the appliance (the same data, the same links' host), computed at request time."""
    from bench.normalized_server import make_app
    from bench.procs import Processes
    from bench.stack import Stack
    with Processes() as procs:
        stack = Stack(str(tmp_path), 240, procs, projects=4, log=lambda text: None)
        stack.populate()
        stack.start_publisher()
        table = routes.routes_here()
        bodies = routes.prepare(stack, table, 1)
        app = make_app([stack.cell_db], api_db=stack.flavor_db)
        compared = []
        for route in table:
            if not route.normalized:
                continue
            seen = {}
            body = b"".join(app({"PATH_INFO": route.path, "HTTP_HOST": f"127.0.0.1:{stack.port}"},
                                lambda status, headers: seen.update(status=status)))
            assert seen["status"] == "200 OK", (route.path, body)
            assert json.loads(body) == json.loads(bodies[route.path]), route.path
            compared.append(route.key)
    assert {"services", "hypervisors_detail", "hypervisor", "aggregates", "server_groups",
            "flavor_access", "zones", "zones_detail"} <= set(compared)
    assert json.loads(bodies[routes.ROUTES[0].path])["flavors"]
    assert len(json.loads(bodies["/v2.1/os-hypervisors/detail"])["hypervisors"]) >= 2
    zones = json.loads(bodies["/v2.1/os-availability-zone/detail"])["availabilityZoneInfo"]
    assert {zone["zoneName"] for zone in zones} >= {"nova", "az-west"}


def test_the_normalized_way_answers_as_the_appliance(tmp_path):
    """The normalized baseline's limits and quota set equal the appliance's answer for
    the same data (the baseline measures the same work, done at request time)."""
    from bench.normalized_server import make_app
    from replica.cell import outbox, simulator
    from replica.cell.simulator import populate
    cell = str(tmp_path / "c0.db")
    outbox.init_cell_db(cell, "c0")
    populate(cell, 30, 2, seed=1)
    api = str(tmp_path / "flavors.db")
    outbox.init_cell_db(api, "flavors", flavors=True)
    simulator.seed_flavors(api)
    app = make_app([cell], api_db=api)

    def get(path):
        seen = {}
        body = b"".join(app({"PATH_INFO": path, "HTTP_HOST": "h"},
                            lambda status, headers: seen.update(status=status)))
        assert seen["status"] == "200 OK", (path, body)
        return json.loads(body)
    limits = get("/v2.1/limits")["limits"]["absolute"]
    detail = get("/v2.1/os-quota-sets/demo/detail")["quota_set"]
    assert limits["maxTotalInstances"] == detail["instances"]["limit"] == 100   # DEMO_QUOTAS
    assert limits["totalInstancesUsed"] == detail["instances"]["in_use"] > 0
    assert get("/v2.1/os-quota-sets/demo/defaults")["quota_set"]["instances"] == 10
    assert get("/v2.1/flavors/2")["flavor"]["name"] == "m1.small"
    assert len(get("/v2.1/flavors/detail")["flavors"]) >= 7


def test_the_round_with_the_median_ratio_counts():
    from types import SimpleNamespace

    def round_of(mine, constant):
        return {routes.APPLIANCE: SimpleNamespace(requests_per_s=mine),
                routes.CONSTANT: SimpleNamespace(requests_per_s=constant)}

    tries = [round_of(700, 1000), round_of(1100, 1000), round_of(950, 1000)]
    assert routes._median_round(tries) is tries[2]
    assert routes._median_round(tries[:1]) is tries[0]
    assert routes.BUDGET_CONNECTIONS == (1, 8) and profiles.FULL.route_rounds == 3


def test_the_normalized_brief_list_loads_whole_instances(tmp_path):
    """GET /servers the normalized way reads every column of the page's instances (as
    Nova loads whole Instance objects for it), and answers each one's id, name and
    links, newest first."""
    from bench.normalized_server import _page_sql, make_app
    from replica.cell import outbox
    from replica.cell.connection import open_cell_reader
    from replica.cell.simulator import populate
    cell = str(tmp_path / "c0.db")
    outbox.init_cell_db(cell, "c0")
    populate(cell, 30, 2, seed=1)
    assert "instances.*" in _page_sql(None, None, detail=False)[0]
    assert "instances.*" not in _page_sql(None, None, detail=True)[0]
    app = make_app([cell])
    seen = {}
    body = b"".join(app({"PATH_INFO": "/v2.1/servers", "QUERY_STRING": "limit=10",
                         "HTTP_HOST": "h"}, lambda status, headers: seen.update(status=status)))
    assert seen["status"] == "200 OK", body
    servers = json.loads(body)["servers"]
    expected = open_cell_reader(cell).execute(
        "SELECT uuid, display_name FROM instances WHERE deleted = 0 "
        "ORDER BY created_at DESC, id DESC LIMIT 10").fetchall()
    assert [(s["id"], s["name"]) for s in servers] == [tuple(row) for row in expected]
    assert servers[0]["links"][0] == {"rel": "self",
                                      "href": f"http://h/v2.1/servers/{expected[0][0]}"}
    empty = b"".join(app({"PATH_INFO": "/v2.1/servers", "QUERY_STRING": "limit=5&name=nothing-so",
                          "HTTP_HOST": "h"}, lambda status, headers: None))
    assert json.loads(empty) == {"servers": []}
