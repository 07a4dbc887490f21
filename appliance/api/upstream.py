"""Pass-through: what the replica does not answer goes to the cloud's own nova-api.

The request leaves as it came (method, path, query, body, the caller's headers with its
token) less the hop-by-hop headers, with ``X-Forwarded-For/-Host/-Proto`` added; the
answer comes back as it is (status, headers less hop-by-hop, body as it arrives: what
came with the head leaves with it, the rest is streamed). The caller's token is not
checked here: nova-api checks it, with its own policy. Upstream failures become
Nova-style faults: 504 when no answer came within ``upstream_timeout`` seconds, 502 when
the upstream could not be reached or broke the exchange. Everything runs on the
worker's event loop (``outbound.py``).
"""

from __future__ import annotations

import http.client
from urllib.parse import quote

import gevent

from appliance.api.faults import ApiError
from appliance.api.outbound import (CONTROL_IN_VALUE, HTTP_TOKEN, REQUEST_TARGET, Endpoint,
                                     OutboundError)

CHUNK = 65536
MAX_BODY = 1 << 20              # request bodies larger than this get 413 (Nova's is 112 KiB)
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate",
                        "proxy-authorization", "te", "trailer", "trailers",
                        "transfer-encoding", "upgrade", "host", "content-length"})
# Every printable ASCII character but the blank: what a request target keeps as it is.
_PRINTABLE = "".join(map(chr, range(0x21, 0x7f)))
_PATH_SAFE = _PRINTABLE.replace("%", "").replace("?", "").replace("#", "")


def request_headers(environ: dict) -> dict[str, str]:
    """The caller's headers as they are to be sent upstream. One whose name is no HTTP
    token or whose value holds a control character is not forwarded."""
    headers = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = key[5:].replace("_", "-").title()
            if name.lower() not in HOP_BY_HOP and HTTP_TOKEN.match(name) \
                    and not CONTROL_IN_VALUE.search(value):
                headers[name] = value
    if environ.get("CONTENT_TYPE"):
        headers["Content-Type"] = environ["CONTENT_TYPE"]
    client = environ.get("REMOTE_ADDR")
    if client:
        before = headers.get("X-Forwarded-For")
        headers["X-Forwarded-For"] = f"{before}, {client}" if before else client
    if environ.get("HTTP_HOST") and "X-Forwarded-Host" not in headers:
        headers["X-Forwarded-Host"] = environ["HTTP_HOST"]
    headers.setdefault("X-Forwarded-Proto", environ.get("wsgi.url_scheme", "http"))
    return headers


def request_target(environ: dict) -> str:
    """The path and query the caller sent, as it sent them (``RAW_URI``, from the
    worker's handler: ``PATH_INFO`` is decoded, and ``%2F`` in it would be a new path
    segment upstream), with any byte that is no printable ASCII percent-encoded."""
    target = environ.get("RAW_URI")
    if not target or not target.startswith("/"):
        # No raw target (another WSGI server): the decoded path encoded again.
        target = quote(environ.get("SCRIPT_NAME", "").rstrip("/")
                       + (environ.get("PATH_INFO") or "/"), safe=_PATH_SAFE,
                       encoding="latin-1")
        query = environ.get("QUERY_STRING")
        return f"{target}?{quote(query, safe=_PRINTABLE, encoding='latin-1')}" if query \
            else target
    if REQUEST_TARGET.match(target):
        return target
    return quote(target, safe=_PRINTABLE, encoding="latin-1")


def read_body(environ: dict) -> bytes | None:
    length = environ.get("CONTENT_LENGTH")
    if length:
        try:
            size = int(length)
        except ValueError:
            raise ApiError(400, "Invalid Content-Length.") from None
        if size > MAX_BODY:
            raise ApiError(413, "Request is too large.")
        return _read(environ, size) if size else b""
    if environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked":
        body = _read(environ, MAX_BODY + 1)
        if len(body) > MAX_BODY:
            raise ApiError(413, "Request is too large.")
        return body
    return None


def _read(environ: dict, size: int) -> bytes:
    # The server's input raises OSError for a body that ends before its length or
    # breaks its chunked framing: the caller's request is at fault, not the appliance.
    try:
        return environ["wsgi.input"].read(size)
    except OSError as exc:
        reason = exc.args[0] if exc.args and isinstance(exc.args[0], str) else "broken"
        raise ApiError(400, f"The request body could not be read ({reason[:200]}).") \
            from None


class Upstream:
    def __init__(self, url: str, timeout: float, cafile: str | None = None):
        self.endpoint = Endpoint(url, timeout, cafile)
        self.timeout = timeout

    def open(self, environ: dict):
        """Send the caller's request upstream; return ``(status line, headers, body
        iterable)``. Raises ApiError (502, 504) when the upstream does not answer."""
        method = environ.get("REQUEST_METHOD", "GET")
        body = read_body(environ)
        try:
            conn, response = self.endpoint.open(method, request_target(environ),
                                                request_headers(environ), body)
        except ValueError:
            raise ApiError(400, "The request cannot be passed on to the cloud's Compute "
                                "API: its method or target is not valid HTTP.") from None
        except OutboundError as exc:
            if exc.timed_out:
                raise self._late() from None
            raise ApiError(502, "The cloud's Compute API could not be reached.") from None
        headers = [(k, v) for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP]
        length = response.getheader("Content-Length")
        if length is not None and response.getheader("Transfer-Encoding") is None:
            headers.append(("Content-Length", length))
        status = f"{response.status} {response.reason or ''}".rstrip()
        if method == "HEAD":
            response.read()
            self.endpoint.release(conn, response)
            return status, headers, [b""]
        # What of the body has come with the head (most often all of it: nova-api's
        # answers are small) goes out with the head in one send, as a replicated read's
        # does; the rest is streamed as it arrives.
        try:
            first = response.read1(CHUNK)
            if not first and response.length:       # closed before its Content-Length
                raise http.client.IncompleteRead(first, response.length)
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            if isinstance(exc, TimeoutError):
                raise self._late() from None
            raise ApiError(502, "The cloud's Compute API broke off its answer.") from None
        if response.length == 0 or not first:
            self.endpoint.release(conn, response)
            return status, headers, [first]
        return status, headers, _Streamed(self.endpoint, conn, response, first)

    def _late(self) -> ApiError:
        return ApiError(504, f"The cloud's Compute API did not answer within "
                             f"{self.timeout:g} seconds.")


class _Streamed:
    """The answer's body, chunk by chunk as it arrives; the connection goes back to the
    pool once it was read to the end, and is closed if the caller went away first."""

    def __init__(self, endpoint: Endpoint, conn, response: http.client.HTTPResponse,
                 first: bytes = b""):
        self.endpoint = endpoint
        self.conn = conn
        self.response = response
        self.first = first
        self.done = False

    def __iter__(self):
        if self.first:
            yield self.first
        try:
            while True:
                chunk = self.response.read1(CHUNK)
                if not chunk:
                    break
                yield chunk
        except (OSError, http.client.HTTPException, gevent.Timeout):
            self.conn.close()
            self.done = True
            raise
        self.endpoint.release(self.conn, self.response)
        self.done = True

    def close(self):
        if not self.done:
            self.conn.close()
            self.done = True
