"""wrk driven by bench/lua/bench.lua against a real baseline server: the summary line
parses into figures, random ids are drawn from the file, wrk's CPU use is reported."""

from __future__ import annotations

import json

import pytest

from tests.bench import needs_wrk

from bench import client
from bench.procs import Processes, wait_until
from bench.wrk import BackgroundWrk, run_wrk
from tests.conftest import free_port

pytestmark = needs_wrk


@pytest.fixture
def constant_server(tmp_path):
    bodies = tmp_path / "bodies.json"
    bodies.write_text(json.dumps({"*": '{"server": {}}', "/v2.1/servers?limit=1": '{"servers": []}'}))
    port = free_port()
    with Processes() as procs:
        proc = procs.start_python("constant", "bench.constant_server",
                                  ["--port", str(port), "--workers", "2", "--bodies", str(bodies)],
                                  log_path=str(tmp_path / "constant.log"))
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: client.request(url + "/x", timeout=2)[0] == 200, 20, "constant server",
                   proc=proc)
        yield url


def test_constant_server_answers_bodies_by_path(constant_server):
    status, headers, body = client.request(constant_server + "/v2.1/servers?limit=1")
    assert status == 200 and body == b'{"servers": []}'
    assert client.request(constant_server + "/v2.1/servers/abc")[2] == b'{"server": {}}'


def test_fixed_path_run(constant_server):
    result = run_wrk(constant_server, "/v2.1/servers?limit=1", connections=2, duration_s=1)
    assert result.requests > 0
    assert result.requests_per_s > 0
    assert 0 < result.p50_ms <= result.p99_ms <= result.p999_ms <= result.max_ms
    assert result.error_count == 0
    assert result.bytes_per_request > len(b'{"servers": []}')
    assert result.wrk_cpu_s >= 0 and result.wrk_cpu_pct >= 0


def test_random_ids_and_interrupt(constant_server, tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("a\nb\nc\n")
    with BackgroundWrk(constant_server, 60, ids_prefix="/v2.1/servers/", ids_file=str(ids),
                       connections=2, delay_ms=5) as load:
        wait_until(lambda: load.running, 10, "wrk to start")
        load.interrupt()
        result = load.collect(20)
    assert result.requests >= 0 and result.error_count == 0
    assert result.duration_s < 30
