"""An API worker: built by the supervisor before the fork, run in the child after it.

Everything that holds an OS resource is made in ``Worker.run`` (after the fork): the
gevent hub is reinitialised, the app (and through it the read-only replica connection)
is built, and the worker opens its own listening socket on the supervisor's reserved
address with SO_REUSEPORT, so the kernel balances connections across workers.

Stopping (SIGTERM, SIGQUIT): stop accepting, take what the kernel already queued on this
worker's listener, close it, answer in-flight requests with ``Connection: close``, close
idle keep-alive connections, and exit once none is left or ``graceful_timeout`` passed.
"""

from __future__ import annotations

import email.parser
import http.client
import os
import re
import select
import signal
import socket
import time
from dataclasses import dataclass
from typing import Callable

import gevent
import gevent.event
import gevent.pool
import gevent.pywsgi
import gevent.socket

from appliance import logs, memory, metrics
from appliance.access_log import AccessLog
from appliance.settings import Settings

BACKLOG = 2048
HEARTBEAT_INTERVAL = 1.0        # seconds between touches of the heartbeat file
DRAIN_POLL = 0.05               # seconds between checks while draining
DRAIN_IDLE_GRACE = 0.25         # a kept-alive connection idle this long is closed on drain
READY_MARK = b"ready\n"
# A refused request (URL or headers too long, malformed) is answered, then what the
# client still sends is read and dropped for a while before the close: closing with
# unread bytes makes the kernel reset the connection, and the client never reads the
# answer (Apache's lingering close).
LINGER_SECONDS = 2.0
LINGER_BYTES = 8 << 20
# A response body up to this size leaves in the same send as its headers (one system
# call, one TCP segment train); a bigger one is sent after them, without being copied.
ONE_SEND_BYTES = 64 << 10
HEADERS_TOO_LARGE_RESPONSE = (b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                              b"Connection: close\r\nContent-Length: 0\r\n\r\n")
NOT_IMPLEMENTED_RESPONSE = (b"HTTP/1.1 501 Not Implemented\r\n"
                            b"Connection: close\r\nContent-Length: 0\r\n\r\n")
TOKEN_STORE = "keystone-tokens.db"    # in data_dir: validated tokens, shared by workers
RECENT_WRITES = "recent-writes.db"    # in data_dir: each caller's last write position


class BootError(RuntimeError):
    """The child could not get ready (bad app, missing replica...): the supervisor halts
    instead of restarting it in a loop."""


def build_api_app(settings: Settings):
    """The Compute API app for one worker (called after the fork)."""
    from appliance.api import ApiConfig, make_app
    server_feeds = tuple(c.name for c in settings.cells if c.kind == "servers")
    # Without a declared flavor source, flavor reads wait for every feed.
    api_db_feeds = tuple(c.name for c in settings.cells if c.kind == "flavors")
    flavor_feeds = api_db_feeds or tuple(c.name for c in settings.cells)
    config = ApiConfig(replica_path=settings.replica, auth=settings.auth,
                       tokens_file=settings.tokens_file or None,
                       keystone=keystone_config(settings) if settings.auth == "keystone"
                       else None,
                       token_store_path=os.path.join(settings.data_dir, TOKEN_STORE),
                       upstream_url=settings.upstream_url or None,
                       upstream_timeout=settings.upstream_timeout,
                       upstream_cafile=settings.upstream_cafile or None,
                       feeds=tuple((c.name, c.control, c.key_file) for c in settings.cells),
                       read_your_writes_wait=settings.read_your_writes_wait,
                       read_your_writes_window=settings.read_your_writes_window,
                       recent_writes_path=os.path.join(settings.data_dir, RECENT_WRITES),
                       noauth_default_token=settings.noauth_default_token,
                       public_url=settings.public_url or None,
                       max_limit=settings.max_limit, server_feeds=server_feeds,
                       default_availability_zone=settings.default_availability_zone,
                       internal_service_availability_zone=(
                           settings.internal_service_availability_zone),
                       flavor_feeds=flavor_feeds, api_db_feeds=api_db_feeds)
    app = make_app(config)
    # Open this process's read-only replica connection now: a replica that cannot be
    # opened is a boot failure, not a 503 on the first request.
    from replica.store.connection import set_reader_map_bytes
    from replica.store.reader import reader_for, set_nova_collation
    set_nova_collation(settings.nova_database_collation)
    set_reader_map_bytes(settings.reader_map_bytes)
    reader_for(settings.replica)
    return app


def keystone_config(settings: Settings):
    from appliance.api.keystone import KeystoneConfig
    from appliance.settings import keystone_password
    return KeystoneConfig(
        url=settings.keystone_url, user=settings.keystone_user,
        password=keystone_password(settings), project=settings.keystone_project,
        user_domain=settings.keystone_user_domain,
        project_domain=settings.keystone_project_domain, timeout=settings.keystone_timeout,
        cache_size=settings.keystone_cache_size,
        cache_seconds=settings.keystone_cache_seconds,
        negative_seconds=settings.keystone_negative_seconds,
        cafile=settings.keystone_cafile or None)


def tls_acceptor(settings: Settings, what: str):
    """The listener's TLS (None without tls_cert_file); read after the fork."""
    if not settings.tls_cert_file:
        return None
    from appliance.tls import TlsAcceptor
    return TlsAcceptor(settings.tls_cert_file, settings.tls_key_file, what)


def reuseport_listener(host: str, port: int, backlog: int = BACKLOG) -> socket.socket:
    """A listening socket that shares ``(host, port)`` with the other workers."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = gevent.socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


class _ErrorLog:
    """gevent's error log, written as structured lines."""

    def write(self, text: str) -> None:
        text = text.strip()
        if text:
            logs.error("wsgi_error", detail=text[-2000:])

    def flush(self) -> None:
        pass


_WSGIHandler = gevent.pywsgi.WSGIHandler
_monotonic = time.monotonic
_clock = time.perf_counter
_STATUS_LABELS = {code: str(code) for code in range(100, 600)}

# A timer this short expires at the loop's next turn, after the loop has polled the
# sockets and queued the connections that are ready; those are run first.
_A_TURN_S = 1e-9


def _status_label(code) -> str:
    """The status label of a finished response: gevent's ``code`` (negated when the
    client went away while it was sent; None if no response was started)."""
    if code is None:
        return "500"
    label = _STATUS_LABELS.get(code if code > 0 else -code)
    return label if label is not None else str(abs(code))


class _HeadersTooLarge(ValueError):
    """Request headers over http.client's limits: answered 431."""


class _UnknownCoding(ValueError):
    """A request body in a transfer coding other than chunked: answered 501."""


_DIGITS = re.compile(r"[0-9]+\Z")
_FRAMING_NAME_LENGTHS = (len("content-length"), len("transfer-encoding"))
_ABSOLUTE_FORM = re.compile(r"https?://(?:[^/?#\s@]*@)?([^/?#\s@]+)", re.IGNORECASE)


def check_framing(headers, version: str) -> None:
    """Refuse a request whose body's length could be read two ways (RFC 9112 6): several
    differing Content-Lengths, one that is not plain digits (Python's int() takes
    "+5" and "5_0"), both Transfer-Encoding and Content-Length, chunked not the
    last coding or given twice, Transfer-Encoding in HTTP/1.0. gevent would pick one
    reading; a proxy in front may have picked the other, and the rest of the body
    would be read here as the next request. ValueError (400); _UnknownCoding (501)."""
    lengths = []
    encodings = []
    for name, value in headers._headers:       # the header lines, in order, as sent
        if len(name) in _FRAMING_NAME_LENGTHS:
            key = name.lower()
            if key == "content-length":
                lengths.append(value)
            elif key == "transfer-encoding":
                encodings.append(value)
    if lengths and (len(set(lengths)) != 1 or not _DIGITS.match(lengths[0].strip())):
        raise ValueError(f"invalid Content-Length: {', '.join(lengths)[:80]!r}")
    if not encodings:
        return
    if version != "HTTP/1.1":
        raise ValueError(f"Transfer-Encoding in an {version[:12]} request")
    if lengths:
        raise ValueError("both Transfer-Encoding and Content-Length")
    if len(encodings) == 1 and encodings[0].strip().lower() == "chunked":
        return         # what gevent's input reads as chunked, and nothing else
    codings = [c.strip().lower() for value in encodings for c in value.split(",")]
    if codings[-1] == "chunked" and codings.count("chunked") == 1 and all(codings):
        raise _UnknownCoding(f"transfer coding not supported: {codings[0][:40]!r}")
    raise ValueError(f"chunked is not the one last transfer coding: "
                     f"{', '.join(encodings)[:80]!r}")


class Handler(_WSGIHandler):
    """Knows whether it is waiting for the next request on a kept-alive connection, so a
    draining worker can close exactly those; records every response's latency (from the
    app's call to the last byte handed to the socket) with the server's ``observe``."""

    requests_done = 0
    idle_since = 0.0

    def read_requestline(self):
        self.idle_since = _monotonic()
        idle = self.server.idle
        idle.add(self)
        try:
            return _WSGIHandler.read_requestline(self)
        finally:
            idle.discard(self)

    def get_environ(self):
        authority = None
        if not self.path.startswith("/"):
            # The absolute form ("GET http://host/v2.1/servers"), which a server must
            # take too (RFC 9112 3.2.2): its host is the request's Host.
            absolute = _ABSOLUTE_FORM.match(self.path)
            if absolute:
                authority = absolute.group(1)
                rest = self.path[absolute.end():]
                self.path = rest if rest.startswith("/") else "/" + rest
        environ = _WSGIHandler.get_environ(self)
        if authority:
            environ["HTTP_HOST"] = authority
        # The request target as the client sent it (PATH_INFO is percent-decoded): the
        # pass-through forwards it unchanged (appliance.api.upstream.request_target).
        environ["RAW_URI"] = self.path
        return environ

    def MessageClass(self, fp, *args):
        # http.client's limits: 64 KiB a header line, 100 header lines.
        try:
            headers = request_headers(fp)
        except http.client.LineTooLong:
            raise _HeadersTooLarge("a header line is longer than 64 KiB") from None
        except http.client.HTTPException as exc:       # more than 100 header lines
            raise _HeadersTooLarge(str(exc)) from None
        check_framing(headers, self.request_version)
        return headers

    def _handle_client_error(self, ex):
        # The client's error: one log line, never a traceback.
        logs.info("bad_request", client=self.client_address[0] if self.client_address
                  else "", error=str(ex)[:200])
        if isinstance(ex, _HeadersTooLarge):
            return ("431", HEADERS_TOO_LARGE_RESPONSE)
        if isinstance(ex, _UnknownCoding):
            return ("501", NOT_IMPLEMENTED_RESPONSE)
        return ("400", gevent.pywsgi._BAD_REQUEST_RESPONSE)

    def handle_error(self, t, v, tb):
        # What reaches this comes from gevent's handling of the request around the app
        # (the app answers its own errors): e.g. a malformed chunked body found while the
        # unread rest is discarded. One line, no traceback; a ValueError is the client's.
        if isinstance(v, ValueError):
            logs.info("bad_request", client=self.client_address[0] if self.client_address
                      else "", error=str(v)[:200])
        else:
            logs.error("request_failed", error=repr(v)[:500])
        self._send_error_response_if_possible(400 if isinstance(v, ValueError) else 500)

    def handle_one_request(self):
        result = _WSGIHandler.handle_one_request(self)
        if result is True:
            # The connection stays open: let every other ready connection have its turn
            # before this one's next request. A client that sends its next request as
            # soon as it reads an answer finds it already waiting here, so without the
            # turn one connection held the worker while the others' requests queued
            # (measured under load, p99 at 8 and 64 connections against the constant
            # server's: 1.2-22 x before, 0.07-0.7 x after; bench/README.md).
            # The wait is a timer, not sleep(0): gevent runs a callback added while it
            # runs callbacks in the same batch, without polling the sockets in between,
            # so sleep(0) most often gave no other connection a turn at all.
            gevent.sleep(_A_TURN_S)
            return result
        if result is None:
            return result
        # gevent refused the request ((status, whole answer): 414, 431, 400).
        self.status, answer = result
        self._linger(answer)
        return None

    def _linger(self, answer: bytes) -> None:
        sock = self.socket
        try:
            sock.sendall(answer)
            sock.shutdown(socket.SHUT_WR)
            until = _monotonic() + LINGER_SECONDS
            left = LINGER_BYTES
            while left > 0:
                remaining = until - _monotonic()
                if remaining <= 0:
                    break
                sock.settimeout(remaining)
                chunk = sock.recv(min(65536, left))
                if not chunk:
                    break
                left -= len(chunk)
        except OSError:
            pass

    def handle_one_response(self):
        started = _clock()
        try:
            return _WSGIHandler.handle_one_response(self)
        finally:
            self.requests_done += 1
            observe = self.server.observe
            if observe is not None:
                environ = self.environ
                code = self.code
                observe(environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "/"),
                        _STATUS_LABELS.get(code) or _status_label(code), _clock() - started)
            access_log = self.server.access_log
            if access_log is not None:
                access_log(self, _clock() - started)

    def log_request(self):
        pass  # gevent's own access line: ours is appliance.access_log (setting access_log)

    def process_result(self):
        # A list answer (every answer of the Compute API app) leaves with its head in
        # one sendmsg: no copy of the body next to the head, one system call for the
        # pieces of a big list page. Anything else (an iterator, TLS, 204 / 304) goes
        # gevent's way.
        result = self.result
        if type(result) is not list or not self.status or self.headers_sent \
                or self.server.tls is not None or self.code in (204, 304):
            return _WSGIHandler.process_result(self)
        self.headers_sent = True
        self.finalize_headers()           # a list always gets a Content-Length
        head = [b"HTTP/1.1 ", self.status, b"\r\n"]
        for header, value in self.response_headers:
            head += (header, b": ", value, b"\r\n")
        head.append(b"\r\n")
        pieces = [b"".join(head)]
        pieces += [piece for piece in result if piece]
        try:
            self.response_length += send_pieces(self.socket, pieces)
        except OSError as ex:
            self.status = "socket error: %s" % ex
            if self.code > 0:
                self.code = -self.code
            raise

    def _write_with_headers(self, data):
        # gevent (26.9, pinned) sends the head and the body with two system calls: a
        # show answers in one. The same bytes, counted the same way (response_length).
        self.headers_sent = True
        self.finalize_headers()
        head = [b"HTTP/1.1 ", self.status, b"\r\n"]
        for header, value in self.response_headers:
            head += (header, b": ", value, b"\r\n")
        head.append(b"\r\n")
        if data and not self.response_use_chunked and len(data) <= ONE_SEND_BYTES:
            head.append(data)
            self._sendall(b"".join(head))
            return
        self._sendall(b"".join(head))
        self._write(data)


# A request's header lines that email's parser (http.client.parse_headers, what gevent
# uses) reads exactly as ``name: value``: a name of printable ASCII without ":" or
# spaces, then the value, the line ending in LF or CRLF and holding no other CR. Any
# other line (folded, a stray CR, no name, "From ...") sends the whole block through
# email's parser, so every request gets the headers it got before.
_PLAIN_NAME = re.compile(r"[!-9;-~]+\Z")


def request_headers(fp) -> gevent.pywsgi.OldMessage:
    """A request's headers as gevent's handler reads them (``OldMessage``), read from
    ``fp`` with http.client's limits (``LineTooLong``, ``HTTPException`` over 100
    lines); plain lines are split here, without email's parser."""
    lines = http.client._read_headers(fp)
    headers = []
    for line in lines[:-1]:
        text = line.decode("latin-1")
        if text.endswith("\r\n"):
            text = text[:-2]
        elif text.endswith("\n"):
            text = text[:-1]
        name, colon, value = text.partition(":")
        if not colon or "\r" in text or not _PLAIN_NAME.match(name):
            return email.parser.Parser(_class=gevent.pywsgi.OldMessage).parsestr(
                b"".join(lines).decode("latin-1"))
        headers.append((name, value.lstrip(" \t")))
    message = gevent.pywsgi.OldMessage()
    message._headers = headers
    message.set_payload("")
    return message


def send_pieces(sock, pieces: list) -> int:
    """Send ``pieces`` in order with one sendmsg, then what the kernel did not take
    (waiting cooperatively); returns the bytes sent."""
    total = sum(map(len, pieces))
    sent = sock.sendmsg(pieces)
    if sent < total:
        for piece in pieces:
            if sent >= len(piece):
                sent -= len(piece)
                continue
            sock.sendall(memoryview(piece)[sent:])
            sent = 0
    return total


class Server(gevent.pywsgi.WSGIServer):
    """gevent's WSGI server with TCP_NODELAY on every accepted socket (gevent writes
    headers and body separately; with Nagle each keep-alive request waits ~40 ms)."""

    def __init__(self, *args, tls=None, **kwargs):
        if tls is not None:
            kwargs["environ"] = {"wsgi.url_scheme": "https"}
        super().__init__(*args, **kwargs)
        self.tls = tls                       # a TlsAcceptor, or None for plain HTTP
        self.idle: set[Handler] = set()
        self.draining = False
        # Called by the handler with (method, path, status, seconds) after each response.
        self.observe: Callable[[str, str, str, float], None] | None = None
        # Called by the handler with (handler, seconds) after each response; None: off.
        self.access_log: Callable[[Handler, float], None] | None = None

    def handle(self, sock, address):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # the client already went away
        if self.tls is not None:
            sock = self.tls.accept(sock)
            if sock is None:
                return None
        return super().handle(sock, address)

    def take_queued(self) -> int:
        """Accept, without waiting, every connection already queued on the listener."""
        taken = 0
        while True:
            try:
                accepted = self.do_read()
            except OSError:
                return taken
            if not accepted:
                return taken
            self.do_handle(*accepted)
            taken += 1

    def close_idle(self) -> None:
        """Close kept-alive connections that have waited for a request a while and have
        no bytes pending. A busy connection is not cut: its next response says
        ``Connection: close``; a connection accepted during the drain gets its first
        request served."""
        now = time.monotonic()
        for handler in list(self.idle):
            if not handler.requests_done or handler.socket is None \
                    or now - handler.idle_since < DRAIN_IDLE_GRACE:
                continue
            try:
                readable, _, _ = select.select([handler.socket.fileno()], [], [], 0)
                if not readable:
                    handler.socket.shutdown(socket.SHUT_RDWR)
            except (OSError, ValueError):
                pass


def closing_when_draining(app, server: Server):
    """While draining, every response says ``Connection: close``."""

    def wrapped(environ, start_response):
        if not server.draining:
            return app(environ, start_response)

        def closing_start_response(status, headers, exc_info=None):
            headers = [h for h in headers if h[0].lower() != "connection"]
            headers.append(("Connection", "close"))
            return start_response(status, headers, exc_info)

        return app(environ, closing_start_response)

    return wrapped


@dataclass
class Worker:
    """One API worker. Built before the fork; ``run`` is called in the child."""

    number: int
    settings: Settings
    host: str
    port: int
    heartbeat_path: str
    metrics_dir: str
    app_factory: Callable[[Settings], Callable] = build_api_app
    role = "worker"
    access_log: AccessLog | None = None   # set in the child (run)

    @property
    def title(self) -> str:
        return f"appliance: worker {self.number}"

    def run(self) -> None:
        gevent.reinit()
        stop = gevent.event.Event()
        for signum in (signal.SIGTERM, signal.SIGQUIT):
            gevent.signal_handler(signum, stop.set)
        try:
            metrics.use_directory(self.metrics_dir)
            raw_app = self.app_factory(self.settings)
            observe = metrics.recorder().observe
            tls = tls_acceptor(self.settings, "api")
            listener = reuseport_listener(self.host, self.port)
        except Exception as exc:
            raise BootError(f"worker {self.number} failed to boot: {exc!r}") from exc
        if hasattr(raw_app, "reload"):
            # The supervisor replaces workers on SIGHUP; a SIGHUP sent to the worker
            # itself re-reads the tokens file in place.
            gevent.signal_handler(signal.SIGHUP, self._reloader(raw_app))
        pool = gevent.pool.Pool(self.settings.worker_connections)
        server = Server(listener, application=raw_app, spawn=pool, handler_class=Handler,
                        log=None, error_log=_ErrorLog(), tls=tls)
        # Latency is recorded by the handler, and the app is wrapped with
        # closing_when_draining only when the drain starts (``_drain``): no per-request
        # middleware on the way.
        server.observe = observe
        server.access_log = self.access_log = AccessLog.from_settings(self.settings, raw_app)
        memory.tune_serving_process()
        server.start()
        self._mark_ready()
        logs.info("worker_ready", worker=self.number, listen=f"{self.host}:{self.port}")
        beat = gevent.spawn(self._heartbeat, stop)
        stop.wait()
        logs.info("worker_draining", worker=self.number, in_flight=len(pool))
        self._drain(server, pool)
        beat.kill()
        metrics.recorder().flush()
        if self.access_log is not None:
            self.access_log.flush()
        logs.info("worker_stopped", worker=self.number)

    def _reloader(self, app):
        def reload():
            try:
                app.reload()
                logs.info("worker_reloaded", worker=self.number)
            except Exception as exc:  # a bad tokens file keeps the previous tokens
                logs.error("worker_reload_failed", worker=self.number, error=repr(exc))
        return reload

    def _mark_ready(self) -> None:
        with open(self.heartbeat_path, "wb") as f:
            f.write(READY_MARK)

    def _heartbeat(self, stop: gevent.event.Event) -> None:
        parent = os.getppid()
        flush_failures = logs.RepeatedError("metrics_flush_failed")   # a full disk
        while True:
            try:
                os.utime(self.heartbeat_path)
            except OSError:
                pass
            try:
                metrics.recorder().flush()
                if self.access_log is not None:
                    self.access_log.flush()
                flush_failures.worked()
            except Exception as exc:  # metrics must never silence the heartbeat
                flush_failures.failed(exc, worker=self.number)
            if os.getppid() != parent:  # the supervisor is gone
                stop.set()
            gevent.sleep(HEARTBEAT_INTERVAL)

    def _drain(self, server: Server, pool: gevent.pool.Pool) -> None:
        server.draining = True
        # Handlers take ``server.application`` at each request: from now on every
        # response says ``Connection: close``.
        server.application = closing_when_draining(server.application, server)
        server.stop_accepting()
        server.take_queued()
        server.close()
        deadline = time.monotonic() + self.settings.graceful_timeout
        while len(pool) and time.monotonic() < deadline:
            server.close_idle()
            gevent.sleep(DRAIN_POLL)
        if len(pool):
            logs.warning("worker_graceful_timeout", worker=self.number, killed=len(pool))
            pool.kill(block=True, timeout=1)
