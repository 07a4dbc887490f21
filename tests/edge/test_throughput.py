"""Replicated read throughput through the edge features, measured in the same run
(printed, not asserted: the machine is shared): auth = keystone with a warm cache and
TLS, each as a ratio to noauth over plain HTTP on the same replica and workers."""

from __future__ import annotations

import http.client
import ssl
import time

from bench.wrk import run_wrk
from tests.conftest import free_port
from tests.edge.conftest import keystone_settings, serve
from bench.certs import self_signed
from tests.realnova.keystone import PASSWORD

DURATION_S = 3.0
CONNECTIONS = 8
ROUNDS = 2


def _connection(url: str):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    host, port = url.split("://")[1].split(":")
    if url.startswith("https"):
        return http.client.HTTPSConnection(host, int(port), timeout=30, context=context)
    return http.client.HTTPConnection(host, int(port), timeout=30)


def fresh_p50(url: str, path: str, headers: dict, count: int = 200) -> float:
    took = []
    for _ in range(count):
        conn = _connection(url)
        started = time.perf_counter()
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        response.read()
        took.append(time.perf_counter() - started)
        conn.close()
        assert response.status == 200
    return sorted(took)[count // 2] * 1000


def warm(url: str, path: str, headers: dict) -> None:
    """Requests on fresh connections until every worker has answered one fast (the first
    Keystone validation of a token takes a round trip or two; the cache is then warm)."""
    fast = 0
    for _ in range(200):
        conn = _connection(url)
        started = time.monotonic()
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        response.read()
        conn.close()
        assert response.status == 200
        fast = fast + 1 if time.monotonic() - started < 0.05 else 0
        if fast >= 20:
            return


def test_read_throughput_keystone_and_tls_vs_noauth(edge, tmp_path):
    server = edge.server_ids("alpha")[0]
    alpha = edge.project("alpha")
    path = f"/v2.1/servers/{server}"
    token = edge.keystone.token("alpha-member", PASSWORD, "alpha")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    self_signed(cert, key)
    noauth_port, tls_port = free_port(), free_port()
    keystone_port = free_port()
    noauth = serve(tmp_path, "noauth", noauth_port, edge.replica)
    keystone = serve(tmp_path, "keystone", keystone_port, edge.replica,
                     **keystone_settings(edge, keystone_cache_seconds=300.0))
    tls = serve(tmp_path, "tls", tls_port, edge.replica, ready_scheme="https",
                tls_cert_file=str(cert), tls_key_file=str(key))
    try:
        targets = (
            ("noauth", f"http://127.0.0.1:{noauth_port}", {"X-Auth-Token": f"m:{alpha}"}),
            ("keystone", f"http://127.0.0.1:{keystone_port}", {"X-Auth-Token": token}),
            ("noauth+tls", f"https://127.0.0.1:{tls_port}", {"X-Auth-Token": f"m:{alpha}"}))
        for name, url, headers in targets:
            warm(url, path, headers)
        runs = {}
        for _ in range(ROUNDS):    # interleaved; the best of each (the machine is shared)
            for name, url, headers in targets:
                result = run_wrk(url, path, connections=CONNECTIONS, duration_s=DURATION_S,
                                 headers=headers)
                assert result.requests and not result.error_count, (name, result.errors)
                if name not in runs or result.requests_per_s > runs[name].requests_per_s:
                    runs[name] = result
        fresh = {name: fresh_p50(url, path, headers) for name, url, headers in targets}
    finally:
        noauth.stop()
        keystone.stop()
        tls.stop()
    base = runs["noauth"].requests_per_s
    print(f"\nGET {path}, 2 workers, wrk -c{CONNECTIONS}, best of {ROUNDS} runs of "
          f"{DURATION_S:g} s:")
    for name, result in runs.items():
        print(f"  {name:<11} {result.requests_per_s:9.0f} req/s  p50 {result.p50_ms:.3f} ms  "
              f"p99 {result.p99_ms:.3f} ms  ratio {result.requests_per_s / base:.2f}  "
              f"errors {result.error_count}")
    print("  one request per new connection (connect, TLS handshake, request), p50: "
          + ", ".join(f"{name} {ms:.2f} ms" for name, ms in fresh.items()))
