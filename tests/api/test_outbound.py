"""Outbound connections are kept alive: answers streamed through the pass-through, with a
Content-Length or chunked, leave their connection for the next request (a new connection
per request costs a connect and a resolver round trip on the worker's thread pool)."""

from __future__ import annotations

import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from appliance.api.faults import ApiError
from appliance.api.upstream import Upstream
from bench.certs import self_signed

BODY = b'{"keypairs": []}'


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        with self.server.lock:
            self.server.connections += 1

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if self.path.endswith("/chunked"):
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(BODY), BODY))
        else:
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)

    def log_message(self, *args):
        pass


@pytest.fixture
def origin():
    yield from _serve()


@pytest.fixture
def tls_origin(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    self_signed(cert, key)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    for server in _serve(context):
        server.cafile = str(cert)
        yield server


def _serve(context: ssl.SSLContext | None = None):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True
    server.connections = 0
    server.lock = threading.Lock()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _environ(path: str) -> dict:
    return {"REQUEST_METHOD": "GET", "PATH_INFO": path, "SCRIPT_NAME": "",
            "QUERY_STRING": "", "HTTP_X_AUTH_TOKEN": "u1:p1", "REMOTE_ADDR": "127.0.0.1",
            "wsgi.url_scheme": "http"}


@pytest.mark.parametrize("path", ["/v2.1/os-keypairs", "/v2.1/os-keypairs/chunked"])
def test_a_streamed_answer_leaves_its_connection_for_the_next(origin, path):
    upstream = Upstream(f"http://127.0.0.1:{origin.server_address[1]}", 5.0)
    try:
        for _ in range(3):
            status, _headers, body = upstream.open(_environ(path))
            assert status == "200 OK"
            assert b"".join(body) == BODY
        assert origin.connections == 1
        assert len(upstream.endpoint._idle) == 1
    finally:
        upstream.endpoint.close()


def test_an_https_upstream_is_verified_and_kept_alive(tls_origin):
    url = f"https://127.0.0.1:{tls_origin.server_address[1]}"
    upstream = Upstream(url, 5.0, cafile=tls_origin.cafile)
    try:
        for path in ("/v2.1/os-keypairs", "/v2.1/os-keypairs/chunked") * 2:
            status, _headers, body = upstream.open(_environ(path))
            assert (status, b"".join(body)) == ("200 OK", BODY)
        assert tls_origin.connections == 1
    finally:
        upstream.endpoint.close()
    # Without the certificate's authority the upstream is not trusted: 502, not a leak.
    untrusted = Upstream(url, 5.0)
    with pytest.raises(ApiError) as refused:
        untrusted.open(_environ("/v2.1/os-keypairs"))
    assert refused.value.status == 502
