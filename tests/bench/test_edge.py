"""The edge scenario on a tiny profile: a real Keystone from the side environment, the
noauth, keystone and TLS appliances on one cell, pass-through to a constant upstream
(the real nova-api is left out here: tests/edge/test_nova_upstream.py covers it). Checks
the JSON's shape and that every figure is a number, not the speeds."""

from __future__ import annotations

import json
import math

import pytest

from tests.bench import needs_wrk
from tests.conftest import missing_part

from bench import parts, profiles, runner

pytestmark = needs_wrk

TINY_EDGE = profiles.QUICK.shrunk(
    name="tiny-edge", read_servers=240, projects=4, edge_duration_s=1.0, edge_rounds=1,
    edge_nova_api=False)

EXPECTED = (
    "GET /servers/{id} c8 keystone vs noauth", "GET /servers/{id} c8 keystone p50",
    "GET /servers/{id} c8 keystone p99", "GET /servers/{id} c8 noauth+tls vs noauth",
    "GET /servers/detail?limit=100 c8 keystone vs noauth",
    "GET /servers/detail?limit=100 c8 noauth+tls p99",
    "pass-through /v2.1/os-keypairs c1, constant upstream: p50 added",
    "pass-through /v2.1/os-keypairs c1, constant upstream: p99 added",
)


@pytest.fixture(scope="module")
def document(tmp_path_factory):
    reason = parts.unavailable("edge", parts.missing())
    if reason:
        missing_part(f"the edge scenario cannot run: {reason}")
    out = tmp_path_factory.mktemp("bench") / "latest.json"
    runner.run(TINY_EDGE, str(out), only=("edge",), log=lambda text: None)
    return json.loads(out.read_text())


def test_the_edge_scenario_ran_with_numeric_figures(document):
    edge = document["scenarios"]["edge"]
    assert list(document["scenarios"]) == ["edge"]
    assert edge["status"] == "ok", edge["reason"]
    figures = {f["name"]: f for f in edge["figures"]}
    for name in EXPECTED:
        assert name in figures, f"no figure {name!r} in {sorted(figures)}"
        value = figures[name]["value"]
        assert isinstance(value, float) and math.isfinite(value), figures[name]


def test_budgets_and_baselines(document):
    figures = {f["name"]: f for f in document["scenarios"]["edge"]["figures"]}
    keystone = figures["GET /servers/{id} c8 keystone vs noauth"]
    assert keystone["budget"] == ">= 0.9x" and keystone["passed"] in (True, False)
    assert keystone["baseline_name"] == "noauth" and keystone["ratio"] > 0
    assert figures["GET /servers/{id} c8 noauth+tls vs noauth"]["budget"] is None
    added = figures["pass-through /v2.1/os-keypairs c1, constant upstream: p50 added"]
    assert added["budget"] == "<= 1" and added["passed"] in (True, False)
    assert added["details"]["upstream"] == "constant upstream"


def test_every_target_was_measured_without_errors(document):
    runs = document["scenarios"]["edge"]["runs"]
    reads = [r for r in runs if r["kind"] == "wrk"]
    assert {r["server"] for r in reads} == {"noauth", "keystone", "noauth+tls"}
    for run in reads:
        assert run["requests"] > 0 and run["error_count"] == 0, run
    [passed] = [r for r in runs if r["kind"] == "interleaved"]
    assert passed["upstream"] == "constant upstream" and passed["pairs"] >= 20
    assert 0 < passed["direct_p50_ms"] <= passed["direct_p99_ms"]
