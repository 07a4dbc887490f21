"""Fixtures of the API tests: a replica file filled with rendered rows, and a real
HTTP server (subprocess) serving it."""

from __future__ import annotations

import http.client
import json
import contextlib
import os
import subprocess
import sys

import pytest

from tests.api import entities as E
from tests.conftest import free_port, wait_for

SERVE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "serve.py")
MEMBER = f"fake:{E.PROJECT}"
OTHER = f"other:{E.OTHER_PROJECT}"
ADMIN = f"admin:{E.PROJECT}"


def fixture_servers() -> list[tuple[str, dict]]:
    """30 servers of PROJECT over two cells and 5 of OTHER_PROJECT, with variety."""
    rows = []
    for n in range(30):
        over = {}
        if n % 3 == 0:
            over["tags"] = ["web", "prod"]
        elif n % 3 == 1:
            over["tags"] = ["web"]
        if n == 7:
            over.update(vm_state="error", fault={"code": 500, "message": "boom",
                                                 "details": "Traceback...",
                                                 "created": E.stamp(3)})
        if n == 8:
            over.update(vm_state="stopped", power_state=4, locked=True, locked_by="owner",
                        locked_reason="maintenance")
        if n == 9:
            over.update(vm_state="building", task_state="spawning", host=None, node=None)
        if n == 10:
            over.update(image_ref="", image_properties={})
        if n == 11:
            over.update(deleted=True, vm_state="deleted", deleted_at=E.stamp(4),
                        updated_at=E.stamp(4), terminated_at=E.stamp(4, micro=0))
        if n == 12:
            over.update(vm_state="soft-delete")
        if n == 13:
            over.update(network_info=E.network_info("10.0.0.13", floating="172.24.4.13",
                                                    ip6="fd00::13"))
        if n == 14:
            over.update(display_name="db.primary", key_name="ops-key",
                        flavor=E.flavor_of_server("2", "m1.small", memory_mb=2048))
        if n in (0, 15):
            # whole seconds, as every stamp of a MariaDB cell
            over.update(launched_at=E.stamp(1, n, 0))
        rows.append(("cell1" if n % 2 else "cell2", E.server(n, **over)))
    for n in range(100, 105):
        rows.append(("cell1", E.server(n, project_id=E.OTHER_PROJECT, user_id="other")))
    return rows


def fixture_flavors() -> list[dict]:
    return [E.flavor("1", "m1.tiny"),
            E.flavor("2", "m1.small", memory_mb=2048, root_gb=20, swap=512,
                     description="small one"),
            E.flavor("3", "m1.medium", memory_mb=4096, root_gb=40, vcpus=2),
            E.flavor("4", "m1.large", memory_mb=8192, root_gb=80, vcpus=4, disabled=True),
            E.flavor("5", "private", is_public=False, projects=[E.PROJECT]),
            E.flavor("6", "secret", is_public=False, projects=[E.OTHER_PROJECT])]


class Api:
    """A tiny HTTP client for one running server."""

    def __init__(self, port: int):
        self.port = port

    def request(self, method: str, path: str, token: str | None = MEMBER,
                version: str | None = None, headers: dict | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            sent = dict(headers or {})
            if token is not None:
                sent["X-Auth-Token"] = token
            if version is not None:
                sent["OpenStack-API-Version"] = f"compute {version}"
            conn.request(method, path, headers=sent)
            response = conn.getresponse()
            body = response.read()
            return Response(response.status, {k.lower(): v for k, v in response.getheaders()},
                            body)
        finally:
            conn.close()

    def get(self, path: str, **kw):
        return self.request("GET", path, **kw)


class Response:
    def __init__(self, status: int, headers: dict, body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)

    @property
    def statements(self) -> int:
        timing = self.headers["server-timing"]
        return int(timing.split('desc="', 1)[1].split(" ", 1)[0])


def start_server(replica: str, port: int, *extra: str, env: dict | None = None):
    proc = subprocess.Popen([sys.executable, SERVE, replica, str(port), *extra],
                            env={**os.environ, **(env or {})})
    api = Api(port)
    try:
        wait_for(lambda: api.get("/", token=None).status == 200, timeout=20,
                 what="the API server to answer")
    except BaseException:
        stop_server(proc)
        raise
    return proc, api


@contextlib.contextmanager
def serving(replica: str, *extra: str, env: dict | None = None):
    """The API over ``replica`` on a free port for the block's duration (its client)."""
    proc, client = start_server(replica, free_port(), *extra, env=env)
    try:
        yield client
    finally:
        stop_server(proc)


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def replica_file(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("replica") / "replica.db")
    E.fill_replica(path, fixture_servers(), fixture_flavors(),
                   {"cell1": 1234, "cell2": 877, "flavors": 6})
    return path


@pytest.fixture(scope="session")
def api(replica_file):
    with serving(replica_file) as client:
        yield client


@pytest.fixture(scope="session")
def anon_api(replica_file):
    """The API as a client without a token sees it: noauth's default identity is a
    member of the fixture's project (as openstack --os-auth-type none gets)."""
    with serving(replica_file, env={"NOAUTH_DEFAULT": f"fake:{E.PROJECT}"}) as client:
        yield client
