"""The real nova-api baseline on a tiny profile: a Nova 34 deployment on SQLite written
by Nova's objects, served by nova-api (2 sync workers) and by the appliance fed from the
same files, the same wrk requests to both. Checks the JSON's shape and that every figure
is a number, not the speeds. Needs the side environment: in CI its absence fails."""

from __future__ import annotations

import json
import math

import pytest

from tests.bench import needs_wrk
from tests.conftest import missing_part

from bench import parts, profiles, runner

pytestmark = needs_wrk

TINY_NOVA = profiles.QUICK.shrunk(name="tiny-novaapi", read_duration_s=1.0,
                                  novaapi_servers=30, novaapi_connections=4,
                                  novaapi_endpoints=("show", "detail100"))


@pytest.fixture(scope="module")
def document(tmp_path_factory):
    reason = parts.unavailable("novaapi", parts.missing())
    if reason:
        missing_part(f"the novaapi scenario cannot run: {reason}")
    out = tmp_path_factory.mktemp("bench") / "latest.json"
    runner.run(TINY_NOVA, str(out), only=("novaapi",), log=lambda text: None)
    return json.loads(out.read_text())


def test_the_quick_run_leaves_it_out():
    assert "novaapi" in profiles.QUICK.left_out and "novaapi" in runner.SCENARIOS


def test_both_served_the_same_requests_with_numeric_ratios(document):
    scenario = document["scenarios"]["novaapi"]
    assert list(document["scenarios"]) == ["novaapi"]
    assert scenario["status"] == "ok", scenario["reason"]
    figures = {f["name"]: f for f in scenario["figures"]}
    show = figures["GET /servers/{id} vs nova-api"]
    assert show["baseline_name"] == "nova-api" and show["budget"] == ">= 100x"
    assert math.isfinite(show["ratio"]) and show["ratio"] > 0
    assert show["passed"] in (True, False)
    # nova-api's two sync workers get as many connections, the appliance all of them.
    assert show["details"]["connections"] == 4 and show["details"]["nova_connections"] == 2
    detail = figures["GET /servers/detail?limit=100 vs nova-api"]
    assert detail["budget"] is None and math.isfinite(detail["ratio"])
    runs = [r for r in scenario["runs"] if r["kind"] == "wrk"]
    assert {(r["server"], r["endpoint"]) for r in runs} == {
        (server, endpoint) for server in ("appliance", "nova-api")
        for endpoint in ("show", "detail100")}
    for run in runs:
        assert run["requests"] > 0 and run["error_count"] == 0, run


def test_the_stack_was_recorded(document):
    [stack] = [r for r in document["scenarios"]["novaapi"]["runs"] if r["kind"] == "stack"]
    assert stack["servers"] == 30 and stack["nova_workers"] == 2
