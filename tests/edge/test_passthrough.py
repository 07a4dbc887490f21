"""Pass-through (upstream_url): what the replica does not answer goes to a real HTTP
upstream (a recording stand-in for nova-api) and comes back unchanged; replicated reads
never reach it; a hanging upstream gives 504 within the deadline while replicated reads
keep answering; an unreachable one gives 502."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from tests.api import entities as E
from tests.appliance.conftest import get
from tests.conftest import free_port, wait_for
from tests.edge.conftest import fill, serve

HERE = os.path.dirname(os.path.abspath(__file__))
ALPHA = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1"
UPSTREAM_TIMEOUT = 2.0


class Recorder:
    def __init__(self, port: int, path: str, proc: subprocess.Popen):
        self.port = port
        self.path = path
        self.proc = proc

    def requests(self) -> list[dict]:
        try:
            with open(self.path) as f:
                return [json.loads(line) for line in f]
        except FileNotFoundError:
            return []


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("upstream")
    port = free_port()
    record = str(tmp / "requests.jsonl")
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "recording_upstream.py"),
                             str(port), record])
    try:
        wait_for(lambda: get(port, "/ping")[0] == 200, what="the upstream to answer")
        yield Recorder(port, record, proc)
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def passing(upstream, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("passing")
    replica = str(tmp / "replica.db")
    fill(replica, {"alpha": ALPHA, "beta": "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2"})
    port = free_port()
    running = serve(tmp, "appliance", port, replica,
                    upstream_url=f"http://127.0.0.1:{upstream.port}",
                    upstream_timeout=UPSTREAM_TIMEOUT)
    try:
        yield running
    finally:
        running.stop()


def call(port, method, path, body=None, headers=None, timeout=10.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


TOKEN = {"X-Auth-Token": f"someone:{ALPHA}", "OpenStack-API-Version": "compute 2.90",
         "X-Custom-Header": "kept"}


@pytest.mark.parametrize("method, path, body", [
    ("POST", "/v2.1/servers", b'{"server": {"name": "new"}}'),
    ("POST", f"/v2.1/servers/{E.server(0)['uuid']}/action", b'{"os-stop": null}'),
    ("DELETE", f"/v2.1/servers/{E.server(0)['uuid']}", None),
    ("PUT", f"/v2.1/servers/{E.server(0)['uuid']}/metadata", b'{"metadata": {}}'),
    ("GET", "/v2.1/os-keypairs?user_id=u1", None),
    ("GET", f"/v2.1/{ALPHA}/os-keypairs", None),
    ("GET", "/v2.1/os-server-groups?all_projects=1", None),
    ("GET", "/v2.1/os-availability-zone/detail", None),
    ("GET", f"/v2.1/servers/{E.server(0)['uuid']}/os-instance-actions", None),
    # usage over a period and hypervisor statistics / uptime are not replicated
    ("GET", "/v2.1/os-simple-tenant-usage?start=2026-11-01T00:00:00&detailed=1", None),
    ("GET", f"/v2.1/os-simple-tenant-usage/{ALPHA}", None),
    ("GET", "/v2.1/os-hypervisors/statistics", None),
    ("GET", "/v2.1/os-hypervisors/1/uptime", None),
    # a user's quotas (project_user_quotas) are not replicated
    ("GET", f"/v2.1/os-quota-sets/{ALPHA}?user_id=someone", None),
    ("GET", f"/v2.1/os-quota-sets/{ALPHA}/detail?user_id=someone", None),
    ("GET", "/v2/servers", None),
])
def test_not_replicated_goes_upstream_unchanged(passing, upstream, method, path, body):
    headers = dict(TOKEN)
    if body is not None:
        headers["Content-Type"] = "application/json"
    before = len(upstream.requests())
    status, got, answer = call(passing.port, method, path, body, headers)
    assert status == (202 if method in ("POST", "PUT", "DELETE") else 200), answer
    assert json.loads(answer) == {"upstream": True, "method": method, "path": path,
                                  "body": (body or b"").decode()}
    assert got["x-openstack-request-id"] == "req-upstream-1"
    assert got["location"] == "http://upstream.example/v2.1/servers/new-id"
    assert got["x-upstream-only"] == "yes"
    seen = upstream.requests()[before:]
    assert len(seen) == 1
    sent = seen[0]
    assert (sent["method"], sent["path"]) == (method, path)
    assert sent["headers"]["x-auth-token"] == TOKEN["X-Auth-Token"]
    assert sent["headers"]["openstack-api-version"] == "compute 2.90"
    assert sent["headers"]["x-custom-header"] == "kept"
    assert sent["headers"]["x-forwarded-for"] == "127.0.0.1"
    assert sent["headers"]["x-forwarded-host"] == f"127.0.0.1:{passing.port}"


def _raw_answer(sock: socket.socket, request_line: bytes,
                header: bytes = b"") -> http.client.HTTPResponse:
    """Send a request line and one more header line as they are (what http.client would
    refuse to), with the token; the answer with its head read."""
    sock.sendall(request_line + b"\r\nHost: x\r\nX-Auth-Token: "
                 + TOKEN["X-Auth-Token"].encode() + b"\r\n"
                 + (header + b"\r\n" if header else b"") + b"Connection: close\r\n\r\n")
    answer = http.client.HTTPResponse(sock)
    answer.begin()
    return answer


def _raw(port: int, request_line: bytes, header: bytes = b"") -> tuple[int, bytes]:
    """``_raw_answer`` on a new connection; the answer's status and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        answer = _raw_answer(sock, request_line, header)
        return answer.status, answer.read()


@pytest.mark.parametrize("target", [
    "/v2.1/os-keypairs/caf%C3%A9",          # a name in UTF-8
    "/v2.1/os-keypairs/a%2Fb",              # an escaped slash is no path separator
    "/v2.1/os-keypairs/a%20b?x=%C3%A9&y=1", # an escaped blank; a query with escapes
    "/v2.1/os-keypairs/100%25",
])
def test_the_target_goes_upstream_as_it_was_sent(passing, upstream, target):
    before = len(upstream.requests())
    status, _, answer = call(passing.port, "GET", target, headers=TOKEN)
    assert status == 200, answer
    assert json.loads(answer)["path"] == target
    assert [r["path"] for r in upstream.requests()[before:]] == [target]


@pytest.mark.parametrize("target", [b"http://edge.example:8774/v2.1/os-keypairs/a%2Fb",
                                    b"HTTP://edge.example:8774/v2.1/os-keypairs/a%2Fb"])
def test_an_absolute_target_goes_upstream_as_its_path(passing, upstream, target):
    """RFC 9112 3.2.2: a server takes the absolute form; its host is the request's."""
    before = len(upstream.requests())
    status, answer = _raw(passing.port, b"GET " + target + b" HTTP/1.1")
    assert status == 200, answer
    sent = upstream.requests()[before:]
    assert [r["path"] for r in sent] == ["/v2.1/os-keypairs/a%2Fb"]
    assert sent[0]["headers"]["x-forwarded-host"] == "edge.example:8774"


def test_raw_bytes_in_the_target_go_upstream_escaped(passing, upstream):
    before = len(upstream.requests())
    status, answer = _raw(passing.port, b"GET /v2.1/os-keypairs/caf\xc3\xa9 HTTP/1.1")
    assert status == 200, answer
    assert [r["path"] for r in upstream.requests()[before:]] == ["/v2.1/os-keypairs/caf%C3%A9"]


def test_a_method_that_is_no_http_token_is_refused(passing, upstream):
    before = len(upstream.requests())
    status, answer = _raw(passing.port, b"G(T /v2.1/os-keypairs HTTP/1.1")
    assert status == 400, answer
    assert len(upstream.requests()) == before


@pytest.mark.parametrize("header", [b"X-Bad: a\x01b", b"X-Nul: a\x00b", b"X(Bad): 1",
                                    b"X-Caf\xe9: 1"])
def test_a_header_that_cannot_be_forwarded_is_left_out(passing, upstream, header):
    before = len(upstream.requests())
    status, answer = _raw(passing.port, b"GET /v2.1/os-keypairs HTTP/1.1", header)
    assert status == 200, answer      # the request goes on, without that header
    sent = upstream.requests()[before:]
    assert len(sent) == 1
    assert header.split(b":")[0].decode("latin-1").lower() not in sent[0]["headers"]
    assert sent[0]["headers"]["x-auth-token"] == TOKEN["X-Auth-Token"]


@pytest.mark.parametrize("framing, status", [
    (b"Content-Length: 10\r\n\r\n{}", 400),                       # ends before its length
    (b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n", 400),   # no chunk size
    (b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n", 400),          # no last chunk
    (b"Content-Length: abc\r\n\r\n{}", 400),
    (b"Content-Length: 99999999999\r\n\r\n{}", 413),
])
def test_a_body_that_cannot_be_read_is_the_callers_error(passing, upstream, framing, status):
    before = len(upstream.requests())
    with socket.create_connection(("127.0.0.1", passing.port), timeout=10) as sock:
        sock.sendall(b"POST /v2.1/servers HTTP/1.1\r\nHost: x\r\nX-Auth-Token: "
                     + TOKEN["X-Auth-Token"].encode() + b"\r\nConnection: close\r\n"
                     + framing)
        sock.shutdown(socket.SHUT_WR)      # the body ends here, whatever it promised
        answer = http.client.HTTPResponse(sock)
        answer.begin()
        assert answer.status == status, answer.read()
        assert answer.reason != "Error"
    assert len(upstream.requests()) == before


def test_replicated_reads_never_touch_the_upstream(passing, upstream):
    before = len(upstream.requests())
    server = E.server(0)["uuid"]
    for path in ("/", "/v2.1/", "/v2.1/servers", "/v2.1/servers/detail",
                 f"/v2.1/servers/{server}", f"/v2.1/servers/{server}/ips",
                 f"/v2.1/{ALPHA}/servers", "/v2.1/flavors", "/v2.1/flavors/detail",
                 "/v2.1/flavors/1", "/v2.1/flavors/1/os-extra_specs",
                 f"/v2.1/servers/{E.server(999)['uuid']}", "/v2.1/limits",
                 f"/v2.1/os-quota-sets/{ALPHA}", f"/v2.1/os-quota-sets/{ALPHA}/detail",
                 f"/v2.1/os-quota-sets/{ALPHA}/defaults",
                 "/v2.1/flavors/1/os-flavor-access"):           # admins' (403)
        status, _, _ = call(passing.port, "GET", path, headers=TOKEN)
        assert status in (200, 403, 404), path
    assert len(upstream.requests()) == before


@pytest.mark.parametrize("path", ["/v2.1/stream", "/v2.1/stream-sized"])
def test_the_answer_is_streamed(passing, upstream, path):
    """The first chunk reaches the client before the upstream sends the second, with a
    chunked answer and with one of known length."""
    conn = http.client.HTTPConnection("127.0.0.1", passing.port, timeout=5)
    try:
        conn.request("GET", path, headers=TOKEN)
        r = conn.getresponse()
        assert r.status == 200
        assert r.read1(100) == b'{"first": "part",'
        open(upstream.path + ".go", "w").close()
        rest = r.read()
    finally:
        conn.close()
        if os.path.exists(upstream.path + ".go"):
            os.unlink(upstream.path + ".go")
    assert rest == b' "second": "part"}'


def test_an_answer_cut_short_gives_502(passing, upstream):
    status, _, body = call(passing.port, "GET", "/v2.1/cut", headers=TOKEN)
    assert status == 502
    assert json.loads(body) == {"computeFault": {
        "code": 502, "message": "The cloud's Compute API broke off its answer."}}
    assert call(passing.port, "GET", "/v2.1/os-keypairs", headers=TOKEN)[0] == 200


def test_an_answer_whose_body_never_comes_gives_504(passing, upstream):
    started = time.monotonic()
    status, _, body = call(passing.port, "GET", "/v2.1/stall/0", headers=TOKEN)
    assert status == 504, body
    assert json.loads(body)["computeFault"]["code"] == 504
    assert UPSTREAM_TIMEOUT - 0.1 < time.monotonic() - started < UPSTREAM_TIMEOUT + 1.5


def test_an_answer_that_stalls_midway_is_cut_off_at_the_deadline(passing, upstream):
    """Its head has gone out: the caller sees the body end short, as from nova-api
    itself, and the worker is not held past the deadline."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", passing.port), timeout=10) as sock:
        answer = _raw_answer(sock, b"GET /v2.1/stall/10 HTTP/1.1")
        assert answer.status == 200
        with pytest.raises(http.client.IncompleteRead) as cut:
            answer.read()
        assert cut.value.partial == b"x" * 10
    assert time.monotonic() - started < UPSTREAM_TIMEOUT + 1.5
    assert call(passing.port, "GET", "/v2.1/os-keypairs", headers=TOKEN)[0] == 200


def test_a_hanging_upstream_gives_504_while_replicated_reads_answer(passing, upstream):
    results = []

    def hang():
        started = time.monotonic()
        status, _, body = call(passing.port, "GET", "/v2.1/hang", headers=TOKEN)
        results.append((status, json.loads(body), time.monotonic() - started))

    hanging = [threading.Thread(target=hang) for _ in range(8)]
    for thread in hanging:
        thread.start()
    wait_for(lambda: sum("/hang" in r["path"] for r in upstream.requests()) >= 8,
             what="the hanging requests to reach the upstream")
    latencies = []
    server = E.server(1)["uuid"]
    while any(t.is_alive() for t in hanging):
        started = time.monotonic()
        status, _, _ = call(passing.port, "GET", f"/v2.1/servers/{server}", headers=TOKEN)
        latencies.append(time.monotonic() - started)
        assert status == 200
    for thread in hanging:
        thread.join()
    latencies.sort()
    print(f"\nreplicated show while 8 requests hang upstream: {len(latencies)} reads, "
          f"p50 {latencies[len(latencies) // 2] * 1000:.2f} ms, "
          f"max {latencies[-1] * 1000:.2f} ms (fresh connection each)")
    assert latencies[-1] < 1.0     # never held for the upstream's 2 s
    for status, body, took in results:
        assert status == 504
        assert body == {"computeFault": {"code": 504, "message": (
            f"The cloud's Compute API did not answer within {UPSTREAM_TIMEOUT:g} seconds.")}}
        assert UPSTREAM_TIMEOUT - 0.1 < took < UPSTREAM_TIMEOUT + 1.5


def test_an_unreachable_upstream_gives_502(tmp_path):
    replica = str(tmp_path / "replica.db")
    fill(replica, {"alpha": ALPHA, "beta": "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2"})
    port = free_port()
    running = serve(tmp_path, "unreachable", port, replica, workers=1,
                    upstream_url=f"http://127.0.0.1:{free_port()}")
    try:
        status, _, body = call(port, "POST", "/v2.1/servers", b"{}", TOKEN)
        assert status == 502
        assert json.loads(body) == {"computeFault": {
            "code": 502, "message": "The cloud's Compute API could not be reached."}}
        assert call(port, "GET", "/v2.1/servers", headers=TOKEN)[0] == 200
    finally:
        running.stop()
