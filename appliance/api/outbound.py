"""Outbound HTTP from a worker (Keystone, the upstream nova-api), cooperative with gevent.

Workers do not monkey-patch, so the standard library's sockets would block the worker's
event loop (every other request of the worker would wait). A request goes out on a
gevent socket (wrapped by a ``gevent.ssl`` context for https), written as one piece of
bytes; its answer is read by ``http.client.HTTPResponse`` (its body framing: length,
chunks, until close) on that socket, with the head read here (``_Response``). Every wait
yields to the hub. No dependency beyond gevent, nothing the one-file binary must be
taught to bundle.

``Endpoint`` keeps a few idle keep-alive connections to one origin (each reused only
within ``IDLE_MAX_AGE`` of its last answer: servers close idle connections after a few
seconds, gunicorn after 2) and runs one request under a deadline (``gevent.Timeout``) on
top of the per-operation socket timeout. An idempotent request on a reused connection
that fails before any byte of the answer came back is retried once on a fresh
connection; a POST is not (it may have been acted on).
"""

from __future__ import annotations

import http.client
import re
import socket
import time
from urllib.parse import urlsplit

import gevent
import gevent.socket
import gevent.ssl

IDLE_CONNECTIONS = 8            # kept-alive connections kept per origin
IDLE_MAX_AGE = 1.0              # seconds an idle connection may be reused
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
MAX_HEAD_LINE = 65536           # bytes of one status or header line (http.client's limit)
MAX_HEADERS = 100               # header lines in one answer (http.client's limit)
_END_OF_HEAD = (b"\r\n", b"\n", b"")
HTTP_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")   # a method, a header name
REQUEST_TARGET = re.compile(r"/[!-~]*\Z")                        # printable ASCII, no blank
CONTROL_IN_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")   # controls but the tab
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})     # sent Content-Length: 0 if empty


class OutboundError(Exception):
    """The other side could not be reached or did not answer in time."""

    def __init__(self, message: str, timed_out: bool = False):
        super().__init__(message)
        self.timed_out = timed_out


class _Response(http.client.HTTPResponse):
    """``http.client``'s response with its head read without the ``email`` package.

    The standard ``begin()`` hands the header lines to ``email.parser``, a general
    message parser: the largest single piece of Python in relaying an answer (nova-api's
    head, eleven headers, read and looked up: 37 us that way, 17 us this way;
    bench/README.md, edge). This ``begin()`` reads the same lines itself and sets what the body readers of
    ``HTTPResponse`` use (``chunked``, ``length``, ``will_close``); the headers are
    still an ``HTTPMessage``, filled one ``msg[name] = value`` at a time."""

    def begin(self):
        if self.headers is not None:
            return
        while True:
            version, status, reason = self._status_line()
            if not 100 <= status < 200 or status == 101:
                break
            self._header_lines()    # an interim answer (100 Continue, ...): skipped
        self.code = self.status = status
        self.reason = reason
        self.version = 10 if version in ("HTTP/1.0", "HTTP/0.9") else 11
        msg = http.client.HTTPMessage()
        name = None
        for line in self._header_lines():
            if line[:1] in (" ", "\t") and name is not None:
                msg.replace_header(name, msg[name] + " " + line.strip(" \t\r\n"))
                continue
            name, colon, value = line.partition(":")
            name = name.strip(" \t")     # a proxy removes blanks before the colon
            if not colon or not name:
                raise http.client.HTTPException(f"malformed header line: {line[:80]!r}")
            msg[name] = value.strip(" \t\r\n")
        self.headers = self.msg = msg
        coding = msg.get("transfer-encoding", "")
        self.chunked = coding.lower() == "chunked"
        self.chunk_left = None
        tokens = {t.strip().lower() for t in msg.get("connection", "").split(",")}
        self.will_close = "close" in tokens or (self.version == 10
                                                and "keep-alive" not in tokens)
        self.length = None
        length = msg.get("content-length")
        if length is not None and not self.chunked:
            try:
                self.length = int(length)
            except ValueError:
                raise http.client.HTTPException(f"bad Content-Length {length[:40]!r}") \
                    from None
            if self.length < 0:
                raise http.client.HTTPException(f"bad Content-Length {length[:40]!r}")
        if status in (204, 304) or 100 <= status < 200 or self._method == "HEAD":
            self.length = 0
        if not self.will_close and not self.chunked and self.length is None:
            self.will_close = True      # the body ends when the upstream closes

    def _status_line(self) -> tuple[str, int, str]:
        line = self.fp.readline(MAX_HEAD_LINE + 1)
        if not line:
            # Closed before any byte of an answer: a kept-alive connection the server
            # had ended (the caller may retry an idempotent request on a new one).
            raise http.client.RemoteDisconnected("closed without an answer")
        if len(line) > MAX_HEAD_LINE:
            raise http.client.LineTooLong("status line")
        text = line.decode("iso-8859-1").rstrip("\r\n")
        version, _, rest = text.partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/1.") and version != "HTTP/0.9" \
                or len(code) != 3 or not code.isdigit():
            raise http.client.BadStatusLine(text[:80])
        return version, int(code), reason.strip()

    def _header_lines(self) -> list[str]:
        lines = []
        while True:
            line = self.fp.readline(MAX_HEAD_LINE + 1)
            if len(line) > MAX_HEAD_LINE:
                raise http.client.LineTooLong("header line")
            if line in _END_OF_HEAD:
                return lines
            if len(lines) >= MAX_HEADERS:
                raise http.client.HTTPException(f"more than {MAX_HEADERS} header lines")
            lines.append(line.decode("iso-8859-1"))


class _Connection:
    """One connection to the origin: a gevent socket (TLS-wrapped for https), opened on
    first use. The request is written here as bytes and the answer read by
    ``_Response``: ``http.client``'s connection object is not used (its request path,
    a header at a time with checks of each, took 12-18 us for a relayed request that is
    written here in 3.4 us; bench/README.md, edge)."""

    def __init__(self, host: str, port: int, timeout: float, context=None):
        self.host = host
        self.port = port
        self.timeout = timeout
        self._context = context
        self.sock = None

    def connect(self) -> None:
        sock = gevent.socket.create_connection((self.host, self.port), self.timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._context is not None:
                sock = self._context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        self.sock = sock

    def exchange(self, method: str, data: bytes) -> _Response:
        """Send one whole request; return its answer with the head read."""
        if self.sock is None:
            self.connect()
        self.sock.sendall(data)
        response = _Response(self.sock, method=method)
        try:
            response.begin()
        except BaseException:
            response.close()
            raise
        return response

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class Endpoint:
    """One origin (``scheme://host:port``) and the path prefix of its base URL."""

    def __init__(self, base_url: str, timeout: float, cafile: str | None = None):
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        default_port = 443 if parts.scheme == "https" else 80
        self.host_header = host if self.port == default_port else f"{host}:{self.port}"
        self.timeout = timeout
        self.context = None
        if parts.scheme == "https":
            self.context = gevent.ssl.create_default_context(cafile=cafile or None)
        self._idle: list[tuple[_Connection, float]] = []

    def _connection(self) -> tuple[_Connection, bool]:
        now = time.monotonic()
        while self._idle:
            conn, since = self._idle.pop()
            if now - since < IDLE_MAX_AGE:
                return conn, True
            conn.close()
        return _Connection(self.host, self.port, self.timeout, self.context), False

    def release(self, conn: _Connection, response: http.client.HTTPResponse) -> None:
        """Give a connection back once its response was read to the end."""
        if response.length == 0 and not response.isclosed():
            # Read to its Content-Length with read1(), which (unlike read()) does not
            # mark the response done: without this the connection would never be reused.
            response.close()
        if response.will_close or not response.isclosed() \
                or len(self._idle) >= IDLE_CONNECTIONS:
            conn.close()
        else:
            self._idle.append((conn, time.monotonic()))

    def request_bytes(self, method: str, target: str, headers: dict | list,
                      body: bytes | None) -> bytes:
        """The request as it goes on the wire. ``target`` (the path under the base URL,
        with its query) must be printable ASCII and ``headers`` hold valid names and
        values (``Upstream`` checks a caller's); a ``ValueError`` otherwise."""
        if not HTTP_TOKEN.match(method) or not REQUEST_TARGET.match(target):
            raise ValueError(f"not a valid request line: {method[:20]!r} {target[:80]!r}")
        lines = [f"{method} {self.prefix}{target} HTTP/1.1\r\nHost: {self.host_header}\r\n"]
        encoding = False
        for name, value in (headers.items() if isinstance(headers, dict) else headers):
            if not HTTP_TOKEN.match(name) or CONTROL_IN_VALUE.search(value):
                raise ValueError(f"not a valid header: {name[:40]!r}")
            lines.append(f"{name}: {value}\r\n")
            encoding = encoding or name.lower() == "accept-encoding"
        if not encoding:
            # What http.client sends when not told otherwise: the answer as it is, which
            # a caller that named no encoding can read.
            lines.append("Accept-Encoding: identity\r\n")
        if body is not None or method in _BODY_METHODS:
            lines.append(f"Content-Length: {len(body or b'')}\r\n")
        lines.append("\r\n")
        head = "".join(lines).encode("latin-1")
        return head + body if body else head

    def open(self, method: str, path: str, headers: dict | list, body=None,
             deadline: float | None = None):
        """Send a request; return ``(connection, response)`` with the headers read and
        the body not yet. The caller reads the body and calls ``release`` (or closes
        the connection). ``deadline`` (seconds) bounds connect + send + the wait for the
        answer's headers. ``path``: the target under the base URL, query included."""
        limit = self.timeout if deadline is None else deadline
        data = self.request_bytes(method, path, headers, body)
        for attempt in (0, 1):
            conn, reused = self._connection()
            try:
                with gevent.Timeout(limit, OutboundError(
                        f"{method} {self.base_url}{path}: no answer within {limit:g} s",
                        timed_out=True)):
                    response = conn.exchange(method, data)
                return conn, response
            except OutboundError:
                conn.close()
                raise
            except (http.client.RemoteDisconnected, ConnectionResetError,
                    BrokenPipeError) as exc:
                conn.close()
                if reused and attempt == 0 and method in IDEMPOTENT:
                    continue
                raise OutboundError(f"{method} {self.base_url}{path}: {exc!r}") from None
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                timed_out = isinstance(exc, (socket.timeout, TimeoutError))
                raise OutboundError(f"{method} {self.base_url}{path}: {exc!r}",
                                    timed_out=timed_out) from None
        raise AssertionError("unreachable")

    def request(self, method: str, path: str, headers: dict, body: bytes | None = None,
                deadline: float | None = None) -> tuple[int, dict, bytes]:
        """A whole request and its whole (small) answer: ``(status, headers with
        lower-case names, body)``."""
        limit = self.timeout if deadline is None else deadline
        conn, response = self.open(method, path, headers, body, limit)
        try:
            with gevent.Timeout(limit, OutboundError(
                    f"{method} {self.base_url}{path}: answer not read within {limit:g} s",
                    timed_out=True)):
                data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise OutboundError(f"{method} {self.base_url}{path}: {exc!r}") from None
        except BaseException:
            conn.close()
            raise
        self.release(conn, response)
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data

    def close(self) -> None:
        while self._idle:
            self._idle.pop()[0].close()
