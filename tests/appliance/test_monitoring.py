"""What a monitoring system sees: ``promtool check metrics`` on a live /metrics of an
appliance with cells, ``promtool check rules`` (and ``promtool test rules``) on the
shipped rules, and a Grafana dashboard whose every query names only metrics the
appliance exports."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess


from tests.appliance.conftest import get
from tests.conftest import ROOT, missing_part, wait_for

MONITORING = os.path.join(ROOT, "docs", "monitoring")
RULES = os.path.join(MONITORING, "appliance.rules.yml")
RULES_TEST = os.path.join(MONITORING, "appliance.rules.test.yml")
DASHBOARD = os.path.join(MONITORING, "appliance-dashboard.json")
# PromQL words that look like metric names but are not.
PROMQL_WORDS = {"sum", "rate", "irate", "increase", "histogram_quantile", "by", "without",
                "max", "min", "avg", "count", "le", "on", "ignoring", "group_left",
                "group_right", "and", "or", "unless", "time", "offset", "bool", "delta",
                "changes", "resets", "abs", "clamp_min", "clamp_max", "vector", "scalar",
                "label_replace", "topk", "bottomk", "max_over_time", "min_over_time",
                "avg_over_time", "deriv", "absent", "sort", "sort_desc", "count_over_time",
                "inf", "nan"}


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        missing_part("promtool is missing (Debian's prometheus package)")
    return found


def scrape(appliance) -> str:
    status, body, headers = get(appliance.admin_port, "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    return body.decode()


def exported_names(text: str) -> set[str]:
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines()
            if line and not line.startswith("#")}


def test_live_metrics_pass_promtool(cells_appliance):
    for _ in range(3):
        assert get(cells_appliance.port, "/v2.1/servers/detail")[0] == 200
    wait_for(lambda: "appliance_api_request_seconds_count" in scrape(cells_appliance),
             what="worker latencies folded in")
    text = scrape(cells_appliance)
    result = subprocess.run([promtool(), "check", "metrics"], input=text, text=True,
                            capture_output=True, timeout=60)
    assert result.returncode == 0 and not result.stdout.strip() \
        and not result.stderr.strip(), (result.stdout, result.stderr)

    names = exported_names(text)
    assert not {n for n in names if "milli" in n or "micro" in n}
    assert {"appliance_cell_lag_seconds", "appliance_build_info", "appliance_ready",
            "appliance_process_restarts_total", "appliance_cell_resync_failures_total",
            "process_resident_memory_bytes", "process_cpu_seconds_total",
            "process_open_fds", "process_start_time_seconds"} <= names
    assert re.search(r'^appliance_cell_lag_seconds\{cell="cell1"\} [0-9.e+-]+$', text, re.M)
    assert re.search(r'^appliance_ready 1\.0$', text, re.M)
    assert re.search(r'^appliance_build_info\{.*version="[^"]+".*\} 1\.0$', text, re.M)
    # One process_* series per process of the appliance.
    processes = set(re.findall(r'^process_resident_memory_bytes\{process="([^"]+)",'
                               r'role="([^"]+)"\}', text, re.M))
    assert {("supervisor", "supervisor"), ("ingest", "ingest"), ("admin", "admin"),
            ("worker 1", "worker")} <= processes
    # Buckets fit for reads well under a millisecond.
    bounds = {float(b) for b in re.findall(r'appliance_api_request_seconds_bucket\{[^}]*'
                                           r'le="([^"+]+)"', text)}
    assert {0.0001, 0.00025, 0.0005} <= bounds


def test_rules_pass_promtool():
    tool = promtool()
    result = subprocess.run([tool, "check", "rules", RULES], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "SUCCESS" in result.stdout
    # The alerts fire on the series the appliance exports (unit tests of the rules).
    result = subprocess.run([tool, "test", "rules", RULES_TEST], capture_output=True,
                            text=True, timeout=60, cwd=MONITORING)
    assert result.returncode == 0, (result.stdout, result.stderr)


def _dashboard_exprs(dashboard: dict) -> list[str]:
    exprs = []

    def walk(panels):
        for panel in panels:
            exprs.extend(t["expr"] for t in panel.get("targets", []) if t.get("expr"))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if isinstance(query, str) and query:
            exprs.append(query)
    return exprs


def metric_names(expr: str) -> set[str]:
    """Identifiers of a PromQL expression that are metric names: not inside a label
    matcher or string, not a function, keyword or label list."""
    expr = re.sub(r'"[^"]*"', '""', expr)               # strings
    expr = re.sub(r"\{[^}]*\}", "{}", expr)             # label matchers
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "",
                  expr)                                 # label lists
    expr = re.sub(r"\[[^\]]*\]", "", expr)              # ranges
    expr = re.sub(r"label_values\(([^,)]*)(,[^)]*)?\)", r"\1", expr)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        word = match.group(0)
        after = expr[match.end():].lstrip()
        if word in PROMQL_WORDS or after.startswith("("):
            continue
        if re.fullmatch(r"\d+(\.\d+)?[eE]?", word):
            continue
        names.add(word)
    return names


def test_dashboard_queries_name_exported_metrics(cells_appliance):
    with open(DASHBOARD) as f:
        dashboard = json.load(f)
    assert dashboard["title"] and dashboard["panels"]
    exprs = _dashboard_exprs(dashboard)
    assert len(exprs) >= 8
    for _ in range(2):
        get(cells_appliance.port, "/v2.1/servers")
    wait_for(lambda: "appliance_api_request_seconds_bucket" in scrape(cells_appliance),
             what="worker latencies folded in")
    exported = exported_names(scrape(cells_appliance))
    used = set()
    for expr in exprs:
        names = metric_names(expr)
        assert names, expr
        missing = names - exported
        assert not missing, f"{expr!r} names {sorted(missing)}, not exported"
        used |= names
    # The panels cover the cells, the API and the processes.
    assert {"appliance_cell_lag_seconds", "appliance_cell_state",
            "appliance_api_request_seconds_bucket", "process_resident_memory_bytes",
            "appliance_process_restarts_total"} <= used


def test_metric_names_of_an_expression():
    assert metric_names('sum by (le) (rate(appliance_api_request_seconds_bucket'
                        '{status=~"5.."}[5m]))') == {"appliance_api_request_seconds_bucket"}
    assert metric_names('max_over_time(appliance_cell_lag_seconds{cell="$cell"}[1m]) > 5') \
        == {"appliance_cell_lag_seconds"}
    assert metric_names("label_values(appliance_cell_state, cell)") == \
        {"appliance_cell_state"}


def test_ingest_figures_in_base_units():
    from prometheus_client import CollectorRegistry, generate_latest

    from appliance.metrics import IngestCollector
    registry = CollectorRegistry()
    registry.register(IngestCollector({
        "events_applied": 7, "dead_letters": 1, "batches_committed": 2,
        "wal_bytes": 65_600, "wal_backlog_bytes": 16_400,
        "cells": [{"cell": "c1", "state": "stale", "lag_ms": 1500.0, "lag_events": 3,
                   "seq": 10, "head": 13, "servers": 5, "flavors": 0, "live_once": True,
                   "last_event_at": 1700000000.5, "state_since": 1700000001.0, "gaps": 1,
                   "replays": 2, "resyncs": 3, "resync_failures": 1, "dead_letters": 1}]}))
    text = generate_latest(registry).decode()
    for line in ('appliance_cell_lag_seconds{cell="c1"} 1.5',
                 'appliance_cell_lag_events{cell="c1"} 3.0',
                 'appliance_cell_live_once{cell="c1"} 1.0',
                 'appliance_cell_last_event_timestamp_seconds{cell="c1"} 1.7000000005e+09',
                 'appliance_cell_resync_failures_total{cell="c1"} 1.0',
                 'appliance_cell_state{cell="c1",state="stale"} 1.0',
                 'appliance_cell_state{cell="c1",state="live"} 0.0',
                 "appliance_ingest_dead_letters_total 1.0",
                 "appliance_ingest_wal_bytes 65600.0",
                 "appliance_ingest_wal_backlog_bytes 16400.0"):
        assert line in text.splitlines(), line
