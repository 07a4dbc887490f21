"""The access log: one line per API request with method, path, status, bytes, duration,
SQL statements, request id and project; off by default; a level below log_level writes
nothing; the NCSA combined format as web servers write it."""

from __future__ import annotations

import json
import re

import pytest

from appliance.access_log import AccessLog
from appliance.settings import load
from tests.appliance.cells import CellsAppliance
from tests.appliance.conftest import get
from tests.conftest import wait_for


@pytest.fixture
def make_appliance(tmp_path):
    made = []

    def make(settings: str) -> CellsAppliance:
        running = CellsAppliance(tmp_path / f"a{len(made)}", servers=4, settings=settings)
        made.append(running)
        return running.start()

    yield make
    for running in made:
        running.stop()


def a_server(appliance) -> dict:
    status, body, _ = get(appliance.port, "/v2.1/servers?all_tenants=1",
                          headers={"X-Auth-Token": "admin:demo"})
    assert status == 200
    return json.loads(body)["servers"][0]


def access_lines(appliance) -> list[str]:
    return [line for line in appliance.appliance.log().splitlines()
            if "event=access" in line or '"event": "access"' in line
            or re.match(r"^\S+ - \S+ \[", line)]


def test_one_kv_line_per_request(make_appliance):
    appliance = make_appliance('access_log = "info"')
    server = a_server(appliance)
    status, body, headers = get(appliance.port, f"/v2.1/servers/{server['id']}?x=1",
                                headers={"X-Auth-Token": "admin:demo"})
    assert status == 200
    request_id = headers["x-openstack-request-id"]
    assert get(appliance.port, "/v2.1/servers/nope",
               headers={"X-Auth-Token": "alice:p9"})[0] == 404
    line = wait_for(lambda: next((l for l in access_lines(appliance) if request_id in l),
                                 None), what="the access line")
    fields = {k: json.loads(v) if v.startswith('"') else v
              for k, v in re.findall(r'(\w+)=("[^"]*"|\S+)', line)}
    assert fields["level"] == "info" and fields["role"] == "worker"
    assert fields["method"] == "GET"
    assert fields["path"] == f"/v2.1/servers/{server['id']}?x=1"
    assert fields["status"] == "200"
    assert int(fields["bytes"]) > len(body)        # headers and body, as sent
    assert float(fields["duration_ms"]) > 0
    assert fields["statements"] == "1"
    assert fields["project"] == "demo"
    missing = wait_for(lambda: next((l for l in access_lines(appliance)
                                     if "/v2.1/servers/nope" in l), None),
                       what="the 404's access line")
    assert "status=404" in missing and "project=p9" in missing
    # One line per request, the listing's included.
    assert len([line for line in access_lines(appliance)
                if "/v2.1/servers" in line]) == 3


def test_combined_format_in_json_logs_off_and_below_level(make_appliance):
    appliance = make_appliance('access_log = "warning"\naccess_log_format = "combined"\n'
                               'log_format = "json"')
    get(appliance.port, "/v2.1/flavors", headers={"X-Auth-Token": "bob:p2",
                                                 "User-Agent": "probe/1.0"})
    line = wait_for(lambda: next((l for l in access_lines(appliance) if "/v2.1/flavors" in l),
                                 None), what="the combined line")
    assert re.fullmatch(r'127\.0\.0\.1 - p2 \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] '
                        r'"GET /v2\.1/flavors HTTP/1\.1" 200 \d+ "-" "probe/1\.0" '
                        r'[\d.]+ms stmts=1 req=req-[0-9a-f-]+', line), line


@pytest.mark.parametrize("text, expected", [
    ("", None),                                           # off by default
    ('access_log = "off"', None),
    ('access_log = "debug"', None),                       # below log_level info
    ('access_log = "debug"\nlog_level = "debug"', "debug"),
    ('access_log = "info"', "info"),
])
def test_when_access_lines_are_written(tmp_path, text, expected):
    config = tmp_path / "a.toml"
    config.write_text(text + "\n")
    made = AccessLog.from_settings(load(str(config), environ={}), app=None)
    assert (made.level if made else None) == expected
