"""The admin listener as its own child: health, readiness, status, metrics, the token
rule, JSON errors. Ingest is absent here (its control socket does not answer), which is
exactly the case the listener must report without failing."""

from __future__ import annotations

import json

from appliance.admin import readiness
from appliance.metrics import endpoint
from tests.appliance.conftest import get, wait_for


def admin_get(running, path, token=None):
    headers = {"X-Auth-Token": token} if token else {}
    status, body, headers = get(running.admin_port, path, headers=headers)
    return status, body, headers


def _admin_port(running) -> int:
    with open(running.log_path) as f:
        for line in f:
            if "event=supervisor_started" in line:
                return int(line.split("admin=")[1].split()[0].rsplit(":", 1)[1])
    raise AssertionError("no supervisor_started line")


def test_health_status_readiness_and_metrics(trivial):
    running = trivial(workers=1, TEST_WITH_ADMIN="1")
    running.admin_port = _admin_port(running)
    wait_for(lambda: admin_get(running, "/healthz")[0] == 200, what="admin up")
    status, body, headers = admin_get(running, "/healthz")
    assert json.loads(body) == {"status": "ok"}
    assert headers["Content-Type"] == "application/json"

    status, body, _ = admin_get(running, "/status")
    assert status == 200
    report = json.loads(body)
    assert "does not answer" in report["ingest_error"]
    roles = sorted(p["role"] for p in report["processes"])
    assert roles == ["admin", "worker"]
    assert all(p["pid"] > 0 and p["restarts"] == 0 for p in report["processes"])

    status, body, _ = admin_get(running, "/readyz")
    assert status == 503
    assert json.loads(body)["ready"] is False

    for _ in range(5):
        assert get(running.port, "/v2.1/servers/detail")[0] == 200
    def detail_count():
        status, body, headers = admin_get(running, "/metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain")
        assert "appliance_ingest_up 0.0" in body.decode()
        line = [l for l in body.decode().splitlines()
                if l.startswith("appliance_api_request_seconds_count")
                and 'endpoint="/v2.1/servers/detail"' in l]
        return float(line[0].split()[-1]) if line else 0.0
    # Workers fold their counts into the shared histogram about once a second.
    wait_for(lambda: detail_count() == 5.0, what="5 requests in the histogram")

    status, body, _ = admin_get(running, "/nowhere")
    assert status == 404
    assert json.loads(body)["error"]["code"] == 404
    status, body, _ = get(running.admin_port, "/jobs/1-1")
    assert status == 503 and "ingest" in json.loads(body)["error"]["message"]


def test_token_required_when_configured_always(trivial):
    running = trivial(workers=1, TEST_WITH_ADMIN="1", APPLIANCE_ADMIN_TOKEN="s3cret",
                      APPLIANCE_ADMIN_TOKEN_ALWAYS="true")
    running.admin_port = _admin_port(running)
    wait_for(lambda: admin_get(running, "/healthz", "s3cret")[0] == 200, what="admin up")
    status, body, _ = admin_get(running, "/healthz")
    assert status == 401 and json.loads(body)["error"]["code"] == 401
    assert admin_get(running, "/healthz", "wrong")[0] == 401
    status, _, _ = get(running.admin_port, "/healthz",
                       headers={"Authorization": "Bearer s3cret"})
    assert status == 200


def test_readiness_rules():
    live = {"cell": "c1", "live_once": True, "lag_ms": 10.0, "state": "live"}
    assert readiness({"cells": [live]}, 5000, ("c1",)) == []
    assert readiness({"cells": [dict(live, lag_ms=9000.0)]}, 5000, ("c1",))
    assert readiness({"cells": [dict(live, live_once=False, state="connecting")]}, 5000,
                     ("c1",))
    assert readiness({"cells": []}, 5000, ("c1",)) == ["cell c1: not reported by ingest yet"]
    assert readiness({"ingest_error": "down"}, 5000, ("c1",)) == ["down"]


def test_endpoint_labels_are_bounded():
    assert endpoint("/v2.1/servers/detail") == "/v2.1/servers/detail"
    assert endpoint("/v2.1/6f70656e/servers/2b3c") == "/v2.1/servers/{id}"
    assert endpoint("/v2.1/flavors/m1.tiny") == "/v2.1/flavors/{id}"
    assert endpoint("/") == "/"
