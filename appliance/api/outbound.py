"""Outbound HTTP from a worker (Keystone, the upstream nova-api), cooperative with gevent.

Workers do not monkey-patch, so the standard library's sockets would block the worker's
event loop (every other request of the worker would wait). ``http.client`` does all its
I/O through ``self.sock`` (``sendall`` and a ``makefile`` reader): given a gevent socket,
and for https a socket wrapped by a ``gevent.ssl`` context, it yields to the hub on every
wait. That is the whole client: no dependency beyond gevent, nothing the one-file binary
must be taught to bundle.

``Endpoint`` keeps a few idle keep-alive connections to one origin (each reused only
within ``IDLE_MAX_AGE`` of its last answer: servers close idle connections after a few
seconds, gunicorn after 2) and runs one request under a deadline (``gevent.Timeout``) on
top of the per-operation socket timeout. An idempotent request on a reused connection
that fails before any byte of the answer came back is retried once on a fresh
connection; a POST is not (it may have been acted on).
"""

from __future__ import annotations

import http.client
import socket
import time
from urllib.parse import urlsplit

import gevent
import gevent.socket
import gevent.ssl

IDLE_CONNECTIONS = 8            # kept-alive connections kept per origin
IDLE_MAX_AGE = 1.0              # seconds an idle connection may be reused
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


class OutboundError(Exception):
    """The other side could not be reached or did not answer in time."""

    def __init__(self, message: str, timed_out: bool = False):
        super().__init__(message)
        self.timed_out = timed_out


class _Connection(http.client.HTTPConnection):
    def __init__(self, host, port, timeout, context=None):
        super().__init__(host, port, timeout=timeout)
        self._context = context

    def connect(self):
        sock = gevent.socket.create_connection((self.host, self.port), self.timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._context is not None:
                sock = self._context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


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

    def open(self, method: str, path: str, headers: dict | list, body=None,
             deadline: float | None = None):
        """Send a request; return ``(connection, response)`` with the headers read and
        the body not yet. The caller reads the body and calls ``release`` (or closes
        the connection). ``deadline`` (seconds) bounds connect + send + the wait for the
        answer's headers."""
        limit = self.timeout if deadline is None else deadline
        for attempt in (0, 1):
            conn, reused = self._connection()
            try:
                with gevent.Timeout(limit, OutboundError(
                        f"{method} {self.base_url}{path}: no answer within {limit:g} s",
                        timed_out=True)):
                    conn.request(method, self.prefix + path, body=body,
                                 headers=dict(headers) if isinstance(headers, list) else headers)
                    response = conn.getresponse()
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
