"""The benchmark's quick code paths on a tiny size: every scenario runs against real
processes (cell publisher, appliance, baseline servers, simulator, wrk) and the result
JSON holds the expected scenarios with numeric figures. Speeds are not checked."""

from __future__ import annotations

import json
import math

import pytest

from tests.bench import needs_wrk

from bench import parts, profiles, runner
from bench.__main__ import main

pytestmark = needs_wrk

TINY = profiles.QUICK.shrunk(
    name="tiny",
    read_servers=240,
    read_endpoints=("show", "detail100"),
    read_workers=(1,),
    read_connections=(2,),
    read_duration_s=1.0,
    scaling_sizes=(120, 240),
    scaling_endpoints=("show",),
    scaling_connections=2,
    scaling_duration_s=1.0,
    pair_rounds=2,
    ingest_events=1000,
    ingest_batch=200,
    lag_rates=(100,),
    lag_duration_s=1.5,
    lag_markers_per_s=20.0,
    resync_sizes=(240,),
    background_connections=2,
    background_delay_ms=5,
    projects=4,
    # the routes beyond servers have their own test (test_routes.py)
    left_out=profiles.QUICK.left_out + ("routes",),
)

EXPECTED_FIGURES = {
    "read": ("GET /servers/{id} w1 c2 vs constant body", "GET /servers/{id} w1 c2 vs normalized",
             "GET /servers/detail?limit=100 w1 c2 vs scatter-gather"),
    "scaling": ("GET /servers/{id} @ 120 servers", "GET /servers/{id} @ 240 servers"),
    "ingest": ("ingest server upserts", "ingest server upserts per CPU second",
               "ingest server upserts, sealed feed"),
    "lag": ("lag p50 at 100 events/s", "lag p99 at 100 events/s"),
    "resync": ("resync 240 servers", "resync 240 servers: failed reads meanwhile"),
    "footprint": ("replica on disk per server @ 240", "worker RSS @ 240 servers (max)"),
}


def _numeric(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# The quick profile leaves the edge scenario out (tests/bench/test_edge.py runs it).
RAN = tuple(s for s in runner.SCENARIOS if s not in TINY.left_out)


@pytest.fixture(scope="module")
def document(tmp_path_factory):
    gone = {name: reason for name in RAN if (reason := parts.unavailable(name, parts.missing()))}
    if gone:
        pytest.skip(f"parts of the product are missing: {gone}")
    out = tmp_path_factory.mktemp("bench") / "latest.json"
    runner.run(TINY, str(out), log=lambda text: None)
    return json.loads(out.read_text())


def test_every_scenario_ran(document):
    assert "edge" in TINY.left_out
    assert list(document["scenarios"]) == list(RAN)
    for name, scenario in document["scenarios"].items():
        assert scenario["status"] == "ok", f"{name}: {scenario['reason']}"


def test_expected_figures_are_numeric(document):
    for name, expected in EXPECTED_FIGURES.items():
        figures = {f["name"]: f for f in document["scenarios"][name]["figures"]}
        for figure_name in expected:
            assert figure_name in figures, f"{name}: no figure {figure_name!r} in {sorted(figures)}"
            assert _numeric(figures[figure_name]["value"]), (name, figures[figure_name])


def test_ratios_and_budgets_are_filled(document):
    read = {f["name"]: f for f in document["scenarios"]["read"]["figures"]}
    show = read["GET /servers/{id} w1 c2 vs constant body"]
    assert _numeric(show["baseline"]) and _numeric(show["ratio"])
    # The show budget holds at 1 and 8 connections; the tiny run makes 2.
    assert show["budget"] is None
    detail = read["GET /servers/detail?limit=100 w1 c2 vs constant body"]
    assert detail["budget"] == ">= 0.5x" and detail["passed"] in (True, False)
    ingest = document["scenarios"]["ingest"]["figures"][0]
    assert ingest["budget"] == ">= 50000" and ingest["passed"] in (True, False)


def test_wrk_runs_and_machine_are_recorded(document):
    runs = [r for r in document["scenarios"]["read"]["runs"] if r["kind"] == "wrk"]
    assert {r["server"] for r in runs} == {"appliance", "constant", "normalized", "scatter"}
    for run in runs:
        assert run["requests"] > 0 and run["error_count"] == 0, run
        assert _numeric(run["p99_ms"]) and _numeric(run["wrk_cpu_pct"])
    machine = document["machine"]
    assert machine["nproc"] >= 1 and machine["cpu_model"]
    assert "git_revision" in machine


def test_unknown_scenario_is_refused(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--only", "nonsense"])
    assert exc.value.code == 2
    assert "unknown scenario" in capsys.readouterr().err


def test_the_largest_size_is_held_against_the_smallest_measured_beside_it(document):
    # A stack of the smallest size runs beside the largest, and each request goes to one
    # then the other: the budget compares with that run, the first one stays in the
    # details.
    scaling = document["scenarios"]["scaling"]
    figures = {f["name"]: f for f in scaling["figures"]}
    largest = figures["GET /servers/{id} @ 240 servers"]
    assert largest["baseline_name"] == "@120 beside"
    assert largest["budget"] is not None and largest["passed"] in (True, False)
    assert _numeric(largest["baseline"]) and _numeric(largest["details"]["first_at_smallest_req_s"])
    assert figures["GET /servers/{id} @ 120 servers"]["baseline_name"] == "@120"
    shows = [r["servers"] for r in scaling["runs"]
             if r["kind"] == "wrk" and r["endpoint"] == "show" and r["workers"] == 2]
    # the first measurement, then two interleaved rounds: large first, then small first
    assert shows == [120, 240, 120, 120, 240]
    ratios = largest["details"]["round_ratios"]
    assert len(ratios) == 2 and all(_numeric(r) and r > 0 for r in ratios)
    # of two rounds the lower counts (the ratios are kept rounded to 3 places)
    assert round(largest["ratio"], 3) == min(ratios)
