"""The control sockets: timeouts that never hang, recreated REQ sockets, error replies."""

from __future__ import annotations

import threading
import time

import gevent
import msgpack
import nanomsg
import pytest

from replica import feed
from replica.ingest_control import (ControlTimeout, IngestClient, Job, JobBoard, RequestError,
                                    Requester, serve_control)


class Echo:
    """A cell-like REP server in a thread, answering hello; it can play dead."""

    def __init__(self, url: str):
        self.url = url
        self.sock = nanomsg.Socket(nanomsg.REP)
        self.sock.set_int_option(nanomsg.SOL_SOCKET, nanomsg.RCVTIMEO, 50)
        self.sock.bind(url)
        self.mute = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.is_set():
            try:
                data = self.sock.recv()
            except nanomsg.NanoMsgAPIError:
                continue
            if self.mute.is_set():
                continue   # REP drops the request: the requester times out
            op, args = feed.decode_request(data)
            self.sock.send(feed.encode_reply(op=op, **args))

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def echo(tmp_path):
    server = Echo(f"ipc://{tmp_path}/echo.ctl")
    yield server
    server.close()


def test_a_silent_peer_times_out_and_the_socket_is_recreated(echo):
    req = Requester(echo.url, timeout=0.3)
    assert req.request("hello")["op"] == "hello"
    echo.mute.set()
    started = time.monotonic()
    with pytest.raises(ControlTimeout):
        req.request("hello")
    assert time.monotonic() - started < 2.0
    echo.mute.clear()
    # The late reply of the lost request cannot pair with this one: a new socket.
    assert req.request("digest")["op"] == "digest"
    req.close()


def test_nobody_listening_times_out(tmp_path):
    req = Requester(f"ipc://{tmp_path}/nobody.ctl", timeout=0.2)
    with pytest.raises(ControlTimeout):
        req.request("hello")
    req.close()


def test_begin_lets_the_caller_work_while_the_peer_answers(echo):
    req = Requester(echo.url, timeout=1.0)
    pending = req.begin("bucket", bucket=3)
    assert pending.result()["bucket"] == 3
    pending = req.begin("bucket", bucket=4)
    pending.cancel()
    assert req.request("bucket", bucket=5)["bucket"] == 5
    req.close()


def test_ingest_control_server_and_client(tmp_path):
    url = f"ipc://{tmp_path}/ingest.ctl"
    board = JobBoard()

    def job_op(args):
        job = board.get(args.get("job"))
        if job is None:
            raise RequestError("unknown_job", "no such job")
        return job.to_dict()

    def resync_op(args):
        job = board.add(Job("resync", [args.get("cell") or "all"]))
        gevent.spawn_later(0.2, job.finish)
        return {"job": job.id}

    def broken(args):
        raise KeyError("bug")

    handlers = {"status": lambda args: {"cells": [], "pid": 1}, "resync": resync_op,
                "job": job_op, "broken": broken}
    server = gevent.spawn(serve_control, url, handlers)
    try:
        client = IngestClient(url, timeout=2.0)
        assert client.status() == {"cells": [], "pid": 1}
        seen = []
        job = client.wait_job(client.resync("c1"), progress=seen.append, timeout=10)
        assert job["state"] == "done" and job["cells"] == ["c1"] and seen[0]["state"] == "running"
        with pytest.raises(feed.ControlError) as exc:
            client.job("nope")
        assert exc.value.error == "unknown_job"
        with pytest.raises(feed.ControlError) as exc:
            client._call("broken")
        assert exc.value.error == "internal"
        # Garbage on the socket gets an error reply, and the server goes on.
        raw = client._req.call(b"\xc1 not msgpack")
        assert msgpack.unpackb(raw)["error"] == "malformed"
        assert client.status()["pid"] == 1
        client.close()
    finally:
        server.kill()
