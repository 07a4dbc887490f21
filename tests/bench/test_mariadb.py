"""The MariaDB scenario (``python -m bench --only mariadb``) on a tiny cell: a real
MariaDB, Nova's databases made by nova-manage, the publisher reading the binlog and an
appliance; checks the JSON's shape and that every figure is a number, not the speeds.
And the line a run prints when MariaDB or the side environment is missing."""

from __future__ import annotations

import json
import math

import pytest

from bench import parts, profiles, report, runner
from tests.conftest import missing_part

TINY_MARIADB = profiles.QUICK.shrunk(name="tiny-mariadb", mariadb_servers=200,
                                     mariadb_rates=(50,), mariadb_duration_s=1.0,
                                     mariadb_markers=50)


def test_without_the_side_environment_the_scenario_says_why(tmp_path, monkeypatch):
    monkeypatch.setenv("APPLIANCE_NOVA_VENV", str(tmp_path / "no-such-venv"))
    lines: list[str] = []
    document = runner.run(TINY_MARIADB, str(tmp_path / "out.json"), only=("mariadb",),
                          log=lines.append)
    scenario = document["scenarios"]["mariadb"]
    assert scenario["status"] == report.STATUS_SKIPPED
    assert "side environment" in scenario["reason"] and "no-such-venv" in scenario["reason"]
    assert any(line.startswith("  mariadb: skipped: ") for line in lines), lines


@pytest.fixture(scope="module")
def document(tmp_path_factory):
    reason = parts.unavailable("mariadb", parts.missing())
    if reason:
        missing_part(f"the mariadb scenario cannot run: {reason}")
    out = tmp_path_factory.mktemp("bench") / "latest.json"
    runner.run(TINY_MARIADB, str(out), only=("mariadb",), log=lambda text: None)
    return json.loads(out.read_text())


def test_the_scenario_measures_snapshot_resync_lag_and_cpu(document):
    scenario = document["scenarios"]["mariadb"]
    assert scenario["status"] == "ok", scenario["reason"]
    figures = {f["name"]: f for f in scenario["figures"]}
    run = scenario["runs"][0]
    servers = f"{run['servers']:,} servers"
    assert run["servers"] >= 200
    for name in (f"first snapshot of {servers} to live", f"resync of {servers}",
                 f"resync of {servers}: failed reads meanwhile",
                 "change to visible p50 at 50 changes/s", "change to visible p99 at 50 changes/s",
                 "publisher CPU per change at 50 changes/s"):
        assert name in figures, sorted(figures)
        value = figures[name]["value"]
        assert isinstance(value, (int, float)) and math.isfinite(value), (name, value)
    assert figures[f"resync of {servers}: failed reads meanwhile"]["value"] == 0
    assert run["writer_alone"][0]["achieved_rate"] > 0
    assert run["this"]["lag_at_50"]["lost"] == 0 and run["this"]["resync_state"] == "done"
