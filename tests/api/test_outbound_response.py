"""The pass-through's answer head reader (``outbound._Response``) against the standard
library's own (``http.client.HTTPResponse``) on the same bytes: status, reason, version,
headers in order, how the body is framed, whether the connection closes, and the body."""

from __future__ import annotations

import http.client
import io

import pytest

from appliance.api import outbound

JSON = b'{"keypairs": []}'


class _Bytes:
    def __init__(self, data: bytes):
        self.data = data

    def makefile(self, mode):
        return io.BytesIO(self.data)


def _read(cls, data: bytes, method: str = "GET"):
    response = cls(_Bytes(data), method=method)
    response.begin()
    return response


def _seen(response) -> dict:
    return {"status": response.status, "reason": response.reason,
            "version": response.version, "headers": response.getheaders(),
            "length": response.length, "chunked": response.chunked,
            "will_close": response.will_close,
            "content_length": response.getheader("content-length"),
            "body": response.read()}


ANSWERS = {
    "nova-api": (b"HTTP/1.1 200 OK\r\nServer: gunicorn\r\nDate: Mon, 07 Dec 2026 11:27:57 GMT\r\n"
                 b"Connection: keep-alive\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 16\r\nOpenStack-API-Version: compute 2.1\r\n"
                 b"X-OpenStack-Nova-API-Version: 2.1\r\n"
                 b"Vary: OpenStack-API-Version, X-OpenStack-Nova-API-Version\r\n"
                 b"x-openstack-request-id: req-0f5b6e8e\r\nx-compute-request-id: req-0f5b6e8e"
                 b"\r\n\r\n" + JSON),
    "chunked": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\n{\"key\r\nb\r\npairs\": []}\r\n0\r\n\r\n"),
    "close": b"HTTP/1.1 202 Accepted\r\nConnection: close\r\nContent-Length: 16\r\n\r\n" + JSON,
    "until close": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it",
    "http/1.0": b"HTTP/1.0 200 OK\r\nContent-Length: 16\r\n\r\n" + JSON,
    "http/1.0 keep-alive": (b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\n"
                            b"Content-Length: 16\r\n\r\n" + JSON),
    "no reason": b"HTTP/1.1 200\r\nContent-Length: 16\r\n\r\n" + JSON,
    "long reason": b"HTTP/1.1 409 Conflict Here\r\nContent-Length: 16\r\n\r\n" + JSON,
    "no content": b"HTTP/1.1 204 No Content\r\nX-Compute-Request-Id: r\r\n\r\n",
    "not modified": b"HTTP/1.1 304 Not Modified\r\nContent-Length: 16\r\n\r\n",
    "continue first": (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\n"
                       b"Location: http://x/v2.1/servers/1\r\nContent-Length: 16\r\n\r\n" + JSON),
    "repeated": (b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nVary: X\r\nSet-Cookie: b=2\r\n"
                 b"Content-Length: 0\r\n\r\n"),
    "blanks": (b"HTTP/1.1 200 OK\r\nContent-Type:application/json\r\n"
               b"X-Empty:\r\nContent-Length:  16\r\n\r\n" + JSON),
    "bare newlines": b"HTTP/1.1 200 OK\nContent-Length: 16\n\n" + JSON,
    "latin-1": b"HTTP/1.1 200 OK\r\nX-Name: caf\xe9\r\nContent-Length: 0\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(ANSWERS))
def test_reads_an_answer_as_the_standard_library_does(name):
    data = ANSWERS[name]
    assert _seen(_read(outbound._Response, data)) == _seen(_read(http.client.HTTPResponse, data))


def test_a_head_answer_has_no_body():
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\n"
    ours = _read(outbound._Response, data, method="HEAD")
    assert ours.length == 0 and ours.read() == b"" and ours.getheader("Content-Length") == "16"


def test_blanks_after_a_value_are_not_part_of_it():
    # RFC 9110 5.5; the standard library keeps them.
    response = _read(outbound._Response, b"HTTP/1.1 200 OK\r\nX-Trailing: value \t\r\n"
                                          b"Content-Length: 16  \r\n\r\n" + JSON)
    assert response.getheaders() == [("X-Trailing", "value"), ("Content-Length", "16")]
    assert response.read() == JSON


def test_a_folded_header_line_is_joined():
    response = _read(outbound._Response,
                     b"HTTP/1.1 200 OK\r\nX-Long: one\r\n  two\r\nContent-Length: 0\r\n\r\n")
    assert response.getheader("X-Long") == "one two"


@pytest.mark.parametrize("data, error", [
    (b"", http.client.RemoteDisconnected),
    (b"SSH-2.0-OpenSSH\r\n\r\n", http.client.BadStatusLine),
    (b"HTTP/1.1 2000 OK\r\n\r\n", http.client.BadStatusLine),
    (b"HTTP/1.1 abc OK\r\n\r\n", http.client.BadStatusLine),
    (b"HTTP/2 200 OK\r\n\r\n", http.client.BadStatusLine),
    (b"HTTP/1.1 200 OK\r\n" + b"X: " + b"a" * 70000 + b"\r\n\r\n", http.client.LineTooLong),
    (b"HTTP/1.1 200 " + b"a" * 70000 + b"\r\n\r\n", http.client.LineTooLong),
    (b"HTTP/1.1 200 OK\r\n" + b"X-A: 1\r\n" * 101 + b"\r\n", http.client.HTTPException),
    (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", http.client.HTTPException),
    (b"HTTP/1.1 200 OK\r\n: no name\r\n\r\n", http.client.HTTPException),
    (b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n", http.client.HTTPException),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", http.client.HTTPException),
])
def test_a_broken_answer_is_an_http_error(data, error):
    # Every one of these is an HTTPException, which the pass-through answers with 502.
    with pytest.raises(error):
        _read(outbound._Response, data)
    assert issubclass(error, http.client.HTTPException)


def test_a_request_is_written_as_http_client_would():
    endpoint = outbound.Endpoint("http://127.0.0.1:8774/compute", 5)
    assert endpoint.request_bytes("GET", "/v2.1/os-keypairs?limit=1",
                                  {"X-Auth-Token": "t"}, None) == (
        b"GET /compute/v2.1/os-keypairs?limit=1 HTTP/1.1\r\nHost: 127.0.0.1:8774\r\n"
        b"X-Auth-Token: t\r\nAccept-Encoding: identity\r\n\r\n")
    assert endpoint.request_bytes("POST", "/v2.1/servers", [("Accept-Encoding", "gzip")],
                                  b"{}") == (
        b"POST /compute/v2.1/servers HTTP/1.1\r\nHost: 127.0.0.1:8774\r\n"
        b"Accept-Encoding: gzip\r\nContent-Length: 2\r\n\r\n{}")
    assert endpoint.request_bytes("PUT", "/x", {}, None).endswith(b"Content-Length: 0\r\n\r\n")
    assert b"X-Name: caf\xe9\r\n" in endpoint.request_bytes("GET", "/x", {"X-Name": "caf\xe9"},
                                                             None)


@pytest.mark.parametrize("url, host", [("https://keystone.example/v3", "keystone.example"),
                                       ("http://keystone.example/", "keystone.example"),
                                       ("http://[::1]:5000", "[::1]:5000"),
                                       ("https://10.0.0.1:8443", "10.0.0.1:8443")])
def test_the_host_header_names_the_origin(url, host):
    data = outbound.Endpoint(url, 5).request_bytes("GET", "/", {}, None)
    assert f"\r\nHost: {host}\r\n".encode() in data


@pytest.mark.parametrize("method, target, headers", [
    ("GET ", "/x", {}), ("G(T", "/x", {}), ("GET", "x", {}), ("GET", "/a b", {}),
    ("GET", "/caf\xe9", {}), ("GET", "/x", {"X(Y)": "1"}), ("GET", "/x", {"X": "a\r\nY: b"}),
    ("GET", "/x", {"X": "a\x00"}), ("GET", "/x", {"": "1"}),
])
def test_a_request_that_cannot_be_written_is_refused(method, target, headers):
    with pytest.raises(ValueError):
        outbound.Endpoint("http://127.0.0.1:1", 5).request_bytes(method, target, headers, None)
