"""Fixtures of the edge-endpoint tests: a real Keystone with an edge region whose compute
endpoint is the appliance, a replica with servers of the Keystone projects, and
``appliance serve`` processes in front of it."""

from __future__ import annotations

import http.client
import os
import ssl
import subprocess

import pytest

from bench.stack import toml_value
from tests.api import entities as E
from tests.appliance.conftest import PYTHON, Running, get, start_process, wait_for
from tests.conftest import VENV_BIN, free_port
from tests.realnova.keystone import (EDGE_REGION, SERVICE_PASSWORD, SERVICE_USER, Keystone,
                                     make_keystone)

OPENSTACK = os.path.join(VENV_BIN, "openstack")


class Edge:
    """The edge region: its Keystone, the port the appliance answers on, the replica."""

    def __init__(self, keystone: Keystone, port: int, replica: str, tmp):
        self.keystone = keystone
        self.port = port
        self.replica = replica
        self.tmp = tmp

    @property
    def compute_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v2.1"

    def project(self, name: str) -> str:
        return self.keystone.projects[name]

    def server_ids(self, project: str) -> list[str]:
        return [E.server(n)["uuid"] for n in SERVERS[project]]


# Server numbers per project (E.server(n) gives each a stable uuid).
SERVERS = {"alpha": range(0, 4), "beta": range(10, 13)}


def fill(path: str, projects: dict[str, str]) -> None:
    rows = []
    for name, numbers in SERVERS.items():
        for n in numbers:
            rows.append(("cell1" if n % 2 else "cell2",
                         E.server(n, project_id=projects[name], user_id=f"{name}-member",
                                  display_name=f"{name}-{n}")))
    flavors = [E.flavor("1", "m1.tiny"), E.flavor("2", "m1.small", memory_mb=2048),
               E.flavor("5", "alpha-only", is_public=False, projects=[projects["alpha"]])]
    E.fill_replica(path, rows, flavors, {"cell1": 10, "cell2": 20, "flavors": 3})
    E.fill_quotas(path, [E.quota(None, instances=20),
                         E.quota(projects["alpha"], server_groups_used=2, instances=6,
                                 ram=8192)])


def answers(scheme: str, port: int) -> bool:
    if scheme == "http":
        return get(port, "/v2.1/")[0] == 200
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=context)
    try:
        conn.request("GET", "/v2.1/")
        return conn.getresponse().status == 200
    finally:
        conn.close()


def serve(tmp, name: str, port: int, replica: str, ready_scheme: str = "http",
          cells: tuple = (), **settings) -> Running:
    """``appliance serve`` (real supervisor, workers, ingest, admin) with these settings."""
    data_dir = tmp / name
    os.makedirs(data_dir, exist_ok=True)
    values = {"listen_port": port, "admin_port": free_port(), "workers": 2,
              "data_dir": str(data_dir), "replica_path": replica, "graceful_timeout": 5,
              **settings}
    config = data_dir / "appliance.toml"
    config.write_text("".join(f"{k} = {toml_value(v)}\n" for k, v in values.items())
                      + "".join(f'[[cell]]\nname = "{c}"\nfeed = "{f}"\ncontrol = "{r}"\n'
                                for c, f, r in cells))
    running = start_process([PYTHON, "-m", "appliance", "serve", "--config", str(config)],
                            {}, data_dir, port=port, admin_port=values["admin_port"])
    running.config = config
    try:
        wait_for(lambda: running.proc.poll() is not None or answers(ready_scheme, port),
                 timeout=30, what=f"appliance {name} answering")
        if running.proc.poll() is not None:
            raise AssertionError(f"appliance {name} exited: {running.log()[-3000:]}")
        running.remember_children()
    except BaseException:
        running.stop()
        raise
    return running


@pytest.fixture(scope="session")
def edge(tmp_path_factory):
    """Keystone (populated: projects alpha and beta with reader/member/admin users, the
    appliance's service user, the edge region) and the replica for the appliance."""
    tmp = tmp_path_factory.mktemp("edge")
    keystone = make_keystone(str(tmp / "keystone"))
    try:
        port = free_port()
        keystone.populate(f"http://127.0.0.1:{port}/v2.1")
        replica = str(tmp / "replica.db")
        fill(replica, keystone.projects)
        yield Edge(keystone, port, replica, tmp)
    finally:
        keystone.stop()


def keystone_settings(edge: Edge, **more) -> dict:
    return {"auth": "keystone", "keystone_url": edge.keystone.url,
            "keystone_user": SERVICE_USER, "keystone_password": SERVICE_PASSWORD,
            "keystone_project": "service", "keystone_cache_seconds": 1.0,
            "keystone_negative_seconds": 0.5, "keystone_timeout": 2.0, **more}


@pytest.fixture(scope="session")
def edge_appliance(edge, tmp_path_factory):
    """The appliance as the edge region's compute endpoint (auth = keystone)."""
    running = serve(tmp_path_factory.mktemp("appliance"), "edge", edge.port, edge.replica,
                    **keystone_settings(edge))
    try:
        yield running
    finally:
        running.stop()


def openstack_env(edge: Edge, user: str, region: str = EDGE_REGION,
                  project: str | None = None) -> dict:
    """The environment for the ``openstack`` CLI as ``user`` (a password user of its
    project, named by the user's prefix unless given) in ``region``: a clouds.yaml with
    one cloud, ``edge``."""
    project = project or user.split("-")[0]
    clouds = edge.keystone.clouds_yaml(str(edge.tmp / f"clouds-{user}-{region}.yaml"), user,
                                       project, region)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env["OS_CLIENT_CONFIG_FILE"] = clouds
    return env


def openstack(edge: Edge, user: str, project: str, *args: str, region: str = EDGE_REGION):
    """Run the ``openstack`` CLI as a password user of ``project`` against a region (the
    edge region unless told). Returns the CompletedProcess."""
    return subprocess.run([OPENSTACK, "--os-cloud", "edge", *args],
                          env=openstack_env(edge, user, region, project),
                          capture_output=True, text=True, timeout=120)
