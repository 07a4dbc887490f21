"""REQ/REP control sockets of the appliance side: the requester ingest uses towards
each cell, ingest's own control server, and ``IngestClient`` (admin listener, CLI).

Wire: one msgpack map per message. A request is ``{"v": 1, "op": name, ...args}``;
a reply is ``{"ok": True, ...}`` or ``{"ok": False, "error": code, "message": str}``
(the convention of the cell control socket, see replica.feed). Ingest's ops:

- ``status`` -> ``{"cells": [...], "dead_letters", "events_applied", "batches_committed", "pid", "wal_bytes", "wal_backlog_bytes", ...}``
- ``resync`` ``{"cell": name | None}`` -> ``{"job": id}``
- ``verify`` ``{"cell": name | None, "repair": bool}`` -> ``{"job": id}``
- ``job`` ``{"job": id}`` -> the job (see ``Job.to_dict``)

Every wait goes through gevent (``wait_read`` on the socket's NN_RCVFD) with a
deadline, so a dead peer never hangs the caller, and the same code works in a
gevent process (ingest, admin) and a plain one (CLI). After a timeout the REQ socket
is closed and a new one made: a REQ socket with an unanswered request would pair a
late reply with the next request.

Towards a cell with a key file (``Requester(..., sealer=...)``, see ``sealing.py``)
a request is sealed and its reply must open for that request: a reply that does not
(a refusal from a cell that has no key or another one, an altered or replayed reply)
is a failed request, ``feed.ControlError`` with error ``bad_signature``.
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import gevent
import msgpack
import nanomsg
from gevent.socket import wait_read, wait_write

from replica import feed, sealing

PROTOCOL_VERSION = 1
REQUEST_TIMEOUT = 5.0
MAX_REPLY_BYTES = 64 * 1024 * 1024      # a replay or snapshot page of big entities
JOB_POLL_INTERVAL = 0.1
JOBS_KEPT = 100                          # finished jobs remembered for "job"


class ControlTimeout(TimeoutError):
    """The peer did not answer in time (it may be down)."""


def _recv(sock: nanomsg.Socket, deadline: float | None) -> bytes:
    """Receive one message, waiting through the hub until ``deadline`` (monotonic)."""
    while True:
        try:
            return sock.recv(flags=nanomsg.DONTWAIT)
        except nanomsg.NanoMsgAPIError as exc:
            if exc.errno != nanomsg.EAGAIN:
                raise
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise ControlTimeout("no reply")
        try:
            wait_read(sock.recv_fd, timeout=remaining, timeout_exc=ControlTimeout("no reply"))
        except ControlTimeout:
            raise
        except OSError:
            # The hub reports a closed fd as an error: treat it as silence.
            raise ControlTimeout("socket closed while waiting") from None


def _send(sock: nanomsg.Socket, data: bytes, deadline: float | None) -> None:
    while True:
        try:
            sock.send(data, flags=nanomsg.DONTWAIT)
            return
        except nanomsg.NanoMsgAPIError as exc:
            if exc.errno != nanomsg.EAGAIN:
                raise
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise ControlTimeout("could not send")
        wait_write(sock.send_fd, timeout=remaining, timeout_exc=ControlTimeout("could not send"))


def _unsealed_says(frame: bytes) -> str:
    """What an unsealed reply says (a cell's refusal), unauthenticated and cut short:
    only to help whoever reads the error."""
    if sealing.is_sealed(frame) or len(frame) > 4096:
        return ""
    try:
        reply = msgpack.unpackb(frame, raw=False)
        said = f"{reply.get('error')}: {reply.get('message')}"
    except Exception:  # anything unpacking garbage raises: nothing to quote
        return ""
    return f" (unauthenticated reply: {said[:200]!r})"


class Requester:
    """A REQ socket to one peer with timeouts; recreated after a timeout or error.
    One request at a time (a gevent lock serialises callers)."""

    def __init__(self, url: str, timeout: float = REQUEST_TIMEOUT,
                 max_reply_bytes: int = MAX_REPLY_BYTES, sealer: sealing.Sealer | None = None):
        from gevent.lock import Semaphore  # created here: a lock belongs to its process's hub

        self.url = url
        self.sealer = sealer
        self.timeout = timeout
        self.max_reply_bytes = max_reply_bytes
        self._sock: nanomsg.Socket | None = None
        self._lock = Semaphore()

    def _socket(self) -> nanomsg.Socket:
        if self._sock is None:
            sock = nanomsg.Socket(nanomsg.REQ)
            sock.set_int_option(nanomsg.SOL_SOCKET, nanomsg.RCVMAXSIZE, self.max_reply_bytes)
            sock.set_int_option(nanomsg.SOL_SOCKET, nanomsg.LINGER, 0)
            sock.set_int_option(nanomsg.SOL_SOCKET, nanomsg.RECONNECT_IVL, 100)
            sock.set_int_option(nanomsg.SOL_SOCKET, nanomsg.RECONNECT_IVL_MAX, 1000)
            sock.connect(self.url)
            self._sock = sock
        return self._sock

    def reset(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except nanomsg.NanoMsgError:
                pass
            self._sock = None

    def call(self, data: bytes, timeout: float | None = None) -> bytes:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        with self._lock:
            sock = self._socket()
            try:
                _send(sock, data, deadline)
                return _recv(sock, deadline)
            except BaseException:
                self.reset()
                raise

    def begin(self, op: str, timeout: float | None = None, **args) -> "PendingReply":
        """Send a cell control request now, take its reply later (``.result()``): the
        cell prepares the answer while the caller works. The socket stays reserved
        until the reply is taken."""
        wait = self.timeout if timeout is None else timeout
        data, nonce = self.seal(op, feed.encode_request(op, **args))
        self._lock.acquire()
        try:
            _send(self._socket(), data, time.monotonic() + wait)
        except BaseException:
            self.reset()
            self._lock.release()
            raise
        return PendingReply(self, op, wait, nonce)

    def request(self, op: str, timeout: float | None = None, **args) -> dict:
        """A cell control request (replica.feed.CONTROL_OPS); raises feed.ControlError
        for an error reply (or one that does not authenticate), ControlTimeout when the
        cell does not answer."""
        data, nonce = self.seal(op, feed.encode_request(op, **args))
        return self.open_reply(op, self.call(data, timeout), nonce)

    def seal(self, op: str, data: bytes) -> tuple[bytes, bytes]:
        """(request as sent, its nonce): sealed with a key ring, else as it is."""
        if self.sealer is None:
            return data, b""
        try:
            return self.sealer.seal_request(data)
        except sealing.AuthError as exc:      # the key file cannot be used (read)
            raise feed.ControlError(op, "bad_key_file", str(exc)) from None

    def open_reply(self, op: str, frame: bytes, nonce: bytes) -> dict:
        """The reply to the request sealed with ``nonce``, decoded."""
        if self.sealer is None:
            if sealing.is_sealed(frame):
                raise feed.ControlError(op, "bad_signature", "the cell seals its replies and "
                                        "no key file is configured for it here")
            return feed.decode_reply(op, frame)
        try:
            data = self.sealer.open_reply(frame, nonce)
        except sealing.AuthError as exc:
            raise feed.ControlError(op, "bad_signature",
                                    f"{exc}{_unsealed_says(frame)}") from None
        return feed.decode_reply(op, data)

    def close(self) -> None:
        with self._lock:
            self.reset()


class PendingReply:
    """A request in flight on a Requester (see ``Requester.begin``)."""

    def __init__(self, requester: Requester, op: str, wait: float, nonce: bytes = b""):
        self.requester = requester
        self.op = op
        self.nonce = nonce
        self.wait = wait       # counted from result(): the caller's own work is not the cell's
        self._open = True

    def result(self) -> dict:
        if not self._open:
            raise RuntimeError(f"{self.op}: reply already taken")
        self._open = False
        try:
            data = _recv(self.requester._socket(), time.monotonic() + self.wait)
        except BaseException:
            self.requester.reset()
            raise
        finally:
            self.requester._lock.release()
        return self.requester.open_reply(self.op, data, self.nonce)

    def cancel(self) -> None:
        """Give the request up: the socket is recreated so a late reply cannot pair
        with the next request."""
        if self._open:
            self._open = False
            self.requester.reset()
            self.requester._lock.release()


# ---------------------------------------------------------------------------
# Jobs: resync and verify run inside ingest; the control socket reports on them.
# ---------------------------------------------------------------------------

_job_ids = itertools.count(1)


@dataclass
class Job:
    kind: str                       # "resync" | "verify"
    cells: list[str]
    repair: bool = False
    id: str = field(default_factory=lambda: f"{os.getpid()}-{next(_job_ids)}")
    state: str = "running"          # running | done | failed
    done: int = 0
    total: int = 0
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    error: str | None = None
    result: dict = field(default_factory=dict)

    def finish(self, error: str | None = None) -> None:
        self.state = "failed" if error else "done"
        self.error = error
        self.finished_at = time.time()

    def to_dict(self) -> dict:
        return {"id": self.id, "kind": self.kind, "cells": list(self.cells),
                "state": self.state, "done": self.done, "total": self.total,
                "started_at": self.started_at, "finished_at": self.finished_at,
                "error": self.error, "result": self.result}


class JobBoard:
    """Jobs by id; the newest JOBS_KEPT finished ones are remembered."""

    def __init__(self):
        self._jobs: dict[str, Job] = {}

    def add(self, job: Job) -> Job:
        self._jobs[job.id] = job
        finished = [j for j in self._jobs.values() if j.state != "running"]
        for old in finished[:-JOBS_KEPT]:
            del self._jobs[old.id]
        return job

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)


# ---------------------------------------------------------------------------
# Ingest's control server
# ---------------------------------------------------------------------------

def _pack(obj: dict) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


class RequestError(Exception):
    """A request ingest refuses: becomes an error reply with ``code``."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def _decode_ingest_request(data: bytes) -> tuple[str, dict]:
    try:
        obj = msgpack.unpackb(data, raw=False)
    except Exception:  # msgpack raises several unrelated types for bad input
        raise RequestError("malformed", "not a msgpack document") from None
    if not isinstance(obj, dict) or obj.get("v") != PROTOCOL_VERSION:
        raise RequestError("malformed", "expected a map with v=1")
    op = obj.pop("op", None)
    obj.pop("v", None)
    if not isinstance(op, str):
        raise RequestError("malformed", "missing op")
    return op, obj


def serve_control(url: str, handlers: dict[str, Callable[[dict], dict]],
                  on_error: Callable[[str], None] | None = None) -> None:
    """Answer requests on a REP socket bound at ``url`` until the greenlet is killed.
    ``handlers[op](args) -> reply fields``; a handler raises RequestError to refuse.
    Runs as a greenlet inside ingest; every wait yields to the hub."""
    if url.startswith("ipc://"):
        path = url[len("ipc://"):]
        if os.path.exists(path):
            os.unlink(path)  # a socket file left by a killed predecessor
    sock = nanomsg.Socket(nanomsg.REP)
    sock.set_int_option(nanomsg.SOL_SOCKET, nanomsg.LINGER, 0)
    sock.bind(url)
    try:
        while True:
            data = _recv(sock, None)
            try:
                op, args = _decode_ingest_request(data)
                handler = handlers.get(op)
                if handler is None:
                    raise RequestError("unknown_op", f"unknown op {op!r}")
                reply = _pack({"ok": True, **handler(args)})
            except RequestError as exc:
                reply = _pack({"ok": False, "error": exc.code, "message": str(exc)})
            except Exception as exc:  # a handler bug must not end the control socket
                if on_error:
                    on_error(f"control {data[:40]!r}: {exc!r}")
                reply = _pack({"ok": False, "error": "internal", "message": repr(exc)})
            try:
                _send(sock, reply, time.monotonic() + REQUEST_TIMEOUT)
            except ControlTimeout:
                pass  # the requester went away; REP drops the reply
    finally:
        sock.close()


# ---------------------------------------------------------------------------
# The client
# ---------------------------------------------------------------------------

class IngestClient:
    """Talks to ingest's control socket (``ipc://<data_dir>/ingest.ctl``)."""

    def __init__(self, url: str, timeout: float = 5.0):
        self.url = url
        self.timeout = timeout
        self._req = Requester(url, timeout)

    def _call(self, op: str, **args) -> dict:
        data = self._req.call(_pack({"v": PROTOCOL_VERSION, "op": op, **args}))
        return feed.decode_reply(op, data)

    def status(self, edges: bool = False) -> dict:
        """``edges``: each cell also says its last event, when, and its edge counts."""
        reply = self._call("status", **({"edges": True} if edges else {}))
        reply.pop("ok", None)
        return reply

    def resync(self, cell: str | None = None) -> str:
        return self._call("resync", cell=cell)["job"]

    def verify(self, cell: str | None = None, repair: bool = False) -> str:
        return self._call("verify", cell=cell, repair=bool(repair))["job"]

    def job(self, job_id: str) -> dict:
        reply = self._call("job", job=job_id)
        reply.pop("ok", None)
        return reply

    def wait_job(self, job_id: str, progress: Callable[[dict], Any] | None = None,
                 timeout: float | None = 600.0) -> dict:
        """Poll a job until it is done or failed; return it. ``progress(job)`` is called
        on each poll. Raises ControlTimeout after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if progress is not None:
                progress(job)
            if job["state"] != "running":
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise ControlTimeout(f"job {job_id} still running after {timeout}s")
            gevent.sleep(JOB_POLL_INTERVAL)

    def close(self) -> None:
        self._req.close()
