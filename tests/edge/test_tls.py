"""TLS on the API and admin listeners: the openstack CLI with --os-cacert through a
Keystone catalog entry that says https, a plain-HTTP request to the TLS port answered
400 and closed, the admin listener and `appliance status` over TLS, a new certificate
picked up on SIGHUP."""

from __future__ import annotations

import json
import signal
import socket
import ssl
import subprocess

from bench.certs import self_signed
from tests.appliance.conftest import PYTHON, wait_for
from tests.conftest import ROOT, free_port
from tests.edge.conftest import keystone_settings, openstack, serve


def served_certificate(port: int) -> bytes:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw) as tls:
            return tls.getpeercert(binary_form=True)


def https_get(port: int, path: str, cafile, headers=None):
    import http.client
    context = ssl.create_default_context(cafile=str(cafile))
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def test_tls_listeners(edge, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    first = self_signed(cert, key)
    port = free_port()
    keystone = edge.keystone
    # A region whose compute endpoint speaks https (identity stays the core's).
    keystone.add_region("edge-tls", f"https://127.0.0.1:{port}/v2.1")
    running = serve(tmp_path, "tls", port, edge.replica, ready_scheme="https",
                    tls_cert_file=str(cert), tls_key_file=str(key), **keystone_settings(edge))
    try:
        # The openstack CLI through the catalog, trusting the appliance's certificate.
        listed = openstack(edge, "alpha-member", "alpha", "--os-cacert", str(cert),
                           "server", "list", "-f", "json", region="edge-tls")
        assert listed.returncode == 0, listed.stderr
        assert len(json.loads(listed.stdout)) == 4
        # Links say https.
        token = keystone.token("alpha-member", "user-secret", "alpha")
        status, body = https_get(port, "/v2.1/", cert)
        assert status == 200
        assert json.loads(body)["version"]["links"][0]["href"].startswith("https://")
        # Plain HTTP to the TLS port: a 400 saying so, then the connection is closed.
        with socket.create_connection(("127.0.0.1", port), timeout=5) as plain:
            plain.sendall(b"GET /v2.1/servers HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while chunk := plain.recv(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
        assert b"This port speaks HTTPS" in answer
        assert https_get(port, "/v2.1/servers", cert, {"X-Auth-Token": token})[0] == 200
        # The admin listener speaks TLS too; `appliance status` trusts the same file.
        assert https_get(running.admin_port, "/healthz", cert)[0] == 200
        status = subprocess.run([PYTHON, "-m", "appliance", "status", "--config",
                                 str(running.config)], cwd=ROOT, capture_output=True,
                                text=True, timeout=30)
        assert status.returncode == 0, status.stderr
        # A new certificate: SIGHUP replaces the workers, which serve it.
        assert served_certificate(port) == first
        second = self_signed(cert, key, "edge-appliance-renewed")
        running.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: all(served_certificate(port) == second for _ in range(8)),
                 timeout=20, what="the workers to serve the new certificate")
        wait_for(lambda: served_certificate(running.admin_port) == second, timeout=10,
                 what="the admin listener to serve the new certificate")
    finally:
        running.stop()
