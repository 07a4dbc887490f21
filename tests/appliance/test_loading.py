"""Before every cell a read includes has been live once, the API answers 503 "loading"
(a Nova fault with Retry-After) instead of a list that looks like an empty cloud; once
they have, reads are served, also after a restart while a cell is down."""

from __future__ import annotations

import json

import pytest

from tests.appliance.cells import CellsAppliance
from tests.appliance.conftest import get
from tests.conftest import wait_for

TOKEN = {"X-Auth-Token": "admin:demo"}


@pytest.fixture
def appliance(tmp_path):
    running = CellsAppliance(tmp_path / "cells", servers=5)
    try:
        yield running
    finally:
        running.stop()


def cell_state(appliance, name: str) -> str | None:
    status = appliance.status()
    return next((c["state"] for c in status["cells"] if c["cell"] == name), None)


def api(appliance, path: str):
    status, body, headers = get(appliance.port, path, headers=TOKEN)
    return status, json.loads(body) if body else None, headers


def a_server_of(appliance, cell: str) -> str:
    from replica.cell import connection
    conn = connection.open_cell_reader(appliance.feeds[cell]["db"])
    try:
        return conn.execute("SELECT uuid FROM instances WHERE deleted = 0 LIMIT 1") \
            .fetchall()[0][0]
    finally:
        conn.close()


def test_reads_wait_for_every_cell_they_include(appliance):
    appliance.start_publisher("cell1")
    appliance.start_publisher("flavors")
    appliance.start(publishers=False, wait_ready=False)
    wait_for(lambda: cell_state(appliance, "cell1") == "live"
             and cell_state(appliance, "flavors") == "live", timeout=30,
             what="cell1 and the flavor source live")
    assert cell_state(appliance, "cell2") != "live"

    # cell2 was never live: any server read would answer without it.
    for path in ("/v2.1/servers", "/v2.1/servers/detail?all_tenants=1",
                 f"/v2.1/servers/{a_server_of(appliance, 'cell1')}",
                 f"/v2.1/servers/{a_server_of(appliance, 'cell1')}/ips",
                 "/v2.1/limits", "/v2.1/os-quota-sets/demo/detail"):
        status, body, headers = api(appliance, path)
        assert status == 503, (path, body)
        assert body == {"serviceUnavailable": {
            "code": 503, "message": "The replica is still loading: not every cell has been "
                                    "replicated yet. Retry the request shortly."}}
        assert headers["Retry-After"] == "2"
        assert headers["Content-Type"] == "application/json"
    # The flavor source has been live: flavor reads are served.
    status, body, _ = api(appliance, "/v2.1/flavors")
    assert status == 200 and body["flavors"]
    # Version discovery and writes are not reads of the replica.
    assert api(appliance, "/v2.1/")[0] == 200
    assert get(appliance.port, "/")[0] == 200

    appliance.start_publisher("cell2")

    def served():
        status, body, _ = api(appliance, "/v2.1/servers?all_tenants=1")
        return status == 200 and body
    body = wait_for(served, timeout=30, what="servers served once cell2 was live")
    assert len(body["servers"]) == 10
    assert api(appliance, f"/v2.1/servers/{a_server_of(appliance, 'cell2')}")[0] == 200
    # the usage counts every cell's servers once each was live
    assert api(appliance, "/v2.1/limits")[0] == 200

    # Live once is kept with the replica: a restart while cell2 is down still serves.
    appliance.stop_publisher("cell2")
    appliance.appliance.stop()
    appliance.start(publishers=False, wait_ready=False)
    wait_for(lambda: api(appliance, "/v2.1/servers?all_tenants=1")[0] == 200, timeout=30,
             what="servers served after the restart")
    assert len(api(appliance, "/v2.1/servers?all_tenants=1")[1]["servers"]) == 10
    assert cell_state(appliance, "cell2") != "live"
