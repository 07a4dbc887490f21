"""Fixtures of the process-model tests: a supervisor serving a trivial app, HTTP helpers,
and process bookkeeping so that every test leaves no process behind."""

from __future__ import annotations

import http.client
import json
import os
import signal
import contextlib
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import ROOT, free_port, wait_for

PYTHON = sys.executable


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def get(port: int, path: str = "/", timeout: float = 10.0, headers: dict | None = None):
    """One request on a fresh connection: (status, body bytes, headers)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read(), dict(response.getheaders())
    finally:
        conn.close()


def read_table(data_dir) -> dict:
    with open(os.path.join(data_dir, "processes.json")) as f:
        return json.load(f)


def worker_pids(data_dir) -> set[int]:
    return {p["pid"] for p in read_table(data_dir)["processes"]
            if p["role"] == "worker" and p["state"] == "running"}


class Running:
    """A started process and everything it forked, stopped at teardown."""

    def __init__(self, proc: subprocess.Popen, data_dir, log_path, port=None, admin_port=None):
        self.proc = proc
        self.data_dir = str(data_dir)
        self.log_path = log_path
        self.port = port
        self.admin_port = admin_port
        self.seen_children: set[int] = set()

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def remember_children(self) -> set[int]:
        try:
            self.seen_children |= {p["pid"] for p in read_table(self.data_dir)["processes"]}
        except (OSError, ValueError, KeyError):
            pass
        return self.seen_children

    def stop(self) -> None:
        self.remember_children()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in self.seen_children:
            if alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def wait_running(running, workers: int) -> None:
    """Until ``workers`` workers, ingest and the admin listener run; then remember the
    children (so that the fixture's stop can check none is left)."""
    wait_for(lambda: len(worker_pids(running.data_dir)) == workers
             and {p["role"] for p in read_table(running.data_dir)["processes"]
                  if p["state"] == "running"} >= {"ingest", "admin"}, timeout=30,
             what="appliance running")
    running.remember_children()


def start_process(argv, env_extra, data_dir, log_name="log.txt", port=None, admin_port=None,
                  cwd=ROOT, new_session=False) -> Running:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env.update(env_extra)
    env["PYTHONPATH"] = ROOT
    log_path = os.path.join(str(data_dir), log_name)
    os.makedirs(str(data_dir), exist_ok=True)
    log = open(log_path, "wb")
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=new_session)
    log.close()
    return Running(proc, data_dir, log_path, port, admin_port)


@pytest.fixture
def trivial(tmp_path):
    """start(workers=2, **env) -> Running: a supervisor serving tests/appliance/trivial_app."""
    started: list[Running] = []

    def start(workers: int = 2, wait: bool = True, **env) -> Running:
        port = free_port()
        data_dir = tmp_path / f"data{len(started)}"
        settings = {"APPLIANCE_DATA_DIR": str(data_dir), "APPLIANCE_LISTEN_PORT": str(port),
                    "APPLIANCE_ADMIN_PORT": str(free_port()),
                    "APPLIANCE_WORKERS": str(workers), "APPLIANCE_GRACEFUL_TIMEOUT": "10",
                    "APPLIANCE_WORKER_TIMEOUT": "5"}
        settings.update({k: str(v) for k, v in env.items()})
        running = start_process([PYTHON, "-m", "tests.appliance.trivial_app"], settings,
                                data_dir, port=port)
        started.append(running)
        if wait:
            wait_for(lambda: len(worker_pids(data_dir)) == workers, timeout=15,
                     what="workers running")
            running.remember_children()
        return running

    yield start
    for running in started:
        running.stop()


def load_loop(port: int, stop, results: list, path: str = "/", timeout: float = 10.0):
    """Requests on fresh connections until ``stop`` is set; appends (ok, detail)."""
    while not stop.is_set():
        try:
            status, body, _ = get(port, path, timeout=timeout)
            results.append((status == 200, body.strip()))
        except (OSError, http.client.HTTPException) as exc:
            results.append((False, repr(exc)))


@contextlib.contextmanager
def under_load(port: int, clients: int, warmup: int, loop=load_loop, **kwargs):
    """Run ``clients`` threads of ``loop`` against ``port``; yield their shared
    ``results`` once ``warmup`` answers came; stop and join them on the way out."""
    stop, results = threading.Event(), []
    loaders = [threading.Thread(target=loop, args=(port, stop, results), kwargs=kwargs)
               for _ in range(clients)]
    for loader in loaders:
        loader.start()
    try:
        wait_for(lambda: len(results) > warmup, what="load running")
        yield results
    finally:
        stop.set()
        for loader in loaders:
            loader.join()


__all__ = ["alive", "get", "read_table", "worker_pids", "start_process", "load_loop",
           "under_load",
           "free_port", "wait_for", "time"]


@pytest.fixture(scope="module")
def cells_appliance(tmp_path_factory):
    """One appliance with two populated cells and a flavor source, ready, shared by the
    tests of a module (which must leave it running and its publishers started)."""
    from tests.appliance.cells import CellsAppliance
    running = CellsAppliance(tmp_path_factory.mktemp("cells"))
    try:
        yield running.start()
    finally:
        running.stop()
