"""Unit tests of the benchmark's figures and tables (pure logic, no processes)."""

from __future__ import annotations

import json

from bench import report
from bench.report import Budget, Figure, Scenario


def test_ratio_and_budget_on_the_ratio():
    figure = Figure("show", 7000.0, "req/s", 10000.0, "constant", Budget(">=", 0.7, "ratio"))
    assert figure.ratio == 0.7
    assert figure.passed is True
    figure.value = 6000.0
    assert figure.passed is False


def test_budget_on_the_value():
    assert Figure("lag p99", 12.0, "ms", budget=Budget("<=", 50)).passed is True
    assert Figure("lag p99", 51.0, "ms", budget=Budget("<=", 50)).passed is False
    assert Figure("lag p99", None, "ms", budget=Budget("<=", 50)).passed is None
    assert Figure("no baseline", 3.0, "x").ratio is None


def test_budget_text():
    assert str(Budget(">=", 0.7, "ratio")) == ">= 0.7x"
    assert str(Budget("<=", 50)) == "<= 50"


def test_table_aligns_and_reports_skips():
    ok = Scenario("read")
    ok.add(Figure("GET /servers/{id} w2 c8 vs constant body", 7123.4, "req/s", 9000.0,
                  "constant", Budget(">=", 0.7, "ratio")))
    ok.add(Figure("p99", 1.234, "ms"))
    skipped = Scenario("lag").skip("simulator not available (ImportError: nope)")
    text = report.table([ok, skipped])
    lines = text.splitlines()
    assert lines[0].split() == list(report.HEADERS)
    assert "7,123" in text and "0.79x" in text and "pass" in text
    assert "lag: SKIPPED: simulator not available (ImportError: nope)" in text
    # columns line up: every figure row is as wide as the header's dashes (or narrower at the end)
    assert len(lines[1]) >= max(len(l) for l in lines[2:4])


def test_runs_table_lists_wrk_runs():
    sc = Scenario("read")
    sc.runs.append({"kind": "wrk", "server": "appliance", "label": "GET /servers/{id}",
                    "servers": 10000, "workers": 2, "connections": 8, "requests_per_s": 5000.0,
                    "p50_ms": 1.2, "p99_ms": 3.4, "p999_ms": 9.9, "error_count": 0,
                    "wrk_cpu_pct": 41.0})
    sc.runs.append({"kind": "resync"})
    text = report.runs_table([sc])
    assert "appliance" in text and "10,000" in text and "41%" in text
    assert len(text.splitlines()) == 3


def test_json_document_is_plain_json(tmp_path):
    sc = Scenario("ingest")
    sc.add(Figure("ingest server upserts", 61000.0, "upserts/s", budget=Budget(">=", 50000)))
    path = tmp_path / "out" / "latest.json"
    report.write_json(str(path), {"scenarios": {sc.name: sc.as_dict()},
                                  "summary": report.summary([sc])})
    loaded = json.loads(path.read_text())
    figure = loaded["scenarios"]["ingest"]["figures"][0]
    assert figure["passed"] is True and figure["budget"] == ">= 50000"
    assert loaded["summary"] == {"budgets": 1, "passed": 1, "failed": [], "skipped_scenarios": [],
                                 "failed_scenarios": []}
