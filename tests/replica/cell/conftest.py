"""Helpers of the cell-side tests: cell databases in tmp_path, publishers as real
processes, and feed / control clients over real nanomsg sockets."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import nanomsg
import pytest

from replica import feed
from replica.cell import connection, outbox

from tests.conftest import ROOT, wait_for

PYTHON = sys.executable
RECV_TIMEOUT_MS = 10_000


def child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


class Control:
    """A REQ client of a publisher's control socket."""

    def __init__(self, url: str):
        self.sock = nanomsg.Socket(nanomsg.REQ)
        self.sock.set_int_option(nanomsg.SOL_SOCKET, nanomsg.RCVTIMEO, RECV_TIMEOUT_MS)
        self.sock.set_int_option(nanomsg.SOL_SOCKET, nanomsg.RCVMAXSIZE, -1)
        self.sock.connect(url)

    def raw(self, data: bytes) -> dict:
        self.sock.send(data)
        return feed._unpack(self.sock.recv(), 1 << 30)

    def call(self, op: str, **args) -> dict:
        self.sock.send(feed.encode_request(op, **args))
        return feed.decode_reply(op, self.sock.recv())

    def close(self) -> None:
        self.sock.close()


class Subscriber:
    """A SUB client of a publisher's feed."""

    def __init__(self, url: str):
        self.sock = nanomsg.Socket(nanomsg.SUB)
        self.sock.set_string_option(nanomsg.SUB, nanomsg.SUB_SUBSCRIBE, b"")
        self.sock.set_int_option(nanomsg.SOL_SOCKET, nanomsg.RCVTIMEO, RECV_TIMEOUT_MS)
        self.sock.set_int_option(nanomsg.SOL_SOCKET, nanomsg.RCVMAXSIZE, -1)
        self.sock.set_int_option(nanomsg.SOL_SOCKET, nanomsg.RCVBUF, 4 * 1024 * 1024)
        self.sock.connect(url)

    def next(self):
        return feed.decode_message(self.sock.recv())

    def heartbeat(self) -> feed.Heartbeat:
        while True:
            message = self.next()
            if isinstance(message, feed.Heartbeat):
                return message

    def close(self) -> None:
        self.sock.close()


class PublisherProc:
    """``python -m replica.cell.publisher`` as a real process."""

    def __init__(self, directory, db: str, name: str, **options):
        self.db = db
        self.name = name
        self.feed_url = f"ipc://{directory}/{name}.feed"
        self.control_url = f"ipc://{directory}/{name}.ctl"
        self.log = os.path.join(str(directory), f"{name}.publisher.log")
        self.options = options
        self.proc: subprocess.Popen | None = None

    def start(self) -> "PublisherProc":
        argv = [PYTHON, "-m", "replica.cell.publisher", "--db", self.db, "--name", self.name,
                "--feed", self.feed_url, "--control", self.control_url,
                "--heartbeat", str(self.options.get("heartbeat", 0.1))]
        for option in ("retention_events", "retention_seconds", "batch_max"):
            if option in self.options:
                argv += [f"--{option.replace('_', '-')}", str(self.options[option])]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(argv, cwd=ROOT, env=child_env(), stdout=log,
                                         stderr=subprocess.STDOUT)
        control = Control(self.control_url)
        try:
            wait_for(lambda: self.alive() and control.call("hello"), 15, what="publisher hello")
        finally:
            control.close()
        return self

    def alive(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise AssertionError(f"publisher exited; log:\n{open(self.log).read()}")
        return True

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                return proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                return proc.wait(10)
        return proc.returncode


@pytest.fixture
def cell_db(tmp_path):
    db = str(tmp_path / "c1.db")
    outbox.init_cell_db(db, "c1")
    return db


@pytest.fixture
def publishers(tmp_path):
    """Start publishers with ``publishers(db, name, **options)``; all stopped at the end."""
    started: list[PublisherProc] = []

    def start(db: str, name: str = "c1", **options) -> PublisherProc:
        proc = PublisherProc(tmp_path, db, name, **options)
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def clients():
    """Open Control / Subscriber clients; all closed at the end."""
    opened = []

    def open_client(kind, url):
        client = kind(url)
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        client.close()


def head_of(db: str) -> int:
    conn = connection.open_cell_reader(db)
    try:
        return outbox.outbox_head(conn)
    finally:
        conn.close()


def epoch_of(db: str) -> str:
    conn = connection.open_cell_reader(db)
    try:
        return outbox.epoch_of(conn)
    finally:
        conn.close()
