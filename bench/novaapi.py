"""The real nova-api as a baseline: one Nova 34 deployment (SQLite files made by
nova-manage, servers written by Nova's own objects through the test harness's writer),
served by nova-api (Nova's WSGI app under gunicorn, 2 workers of one thread each: sync,
as Nova deploys it) and by the appliance fed from the same databases (SQLite publishers
over Nova's cell0, cell1 and API database files, ``appliance serve`` with all workers).
The same wrk requests go to both, back to back; the figures are the appliance's
requests/s against nova-api's (budgets: >= 100 x for show, >= 300 x for
detail?limit=1000).

Needs the side environment (``$APPLIANCE_NOVA_VENV``, else ``<repo>/.nova-venv``);
without it the scenario is skipped with the reason (``bench.parts``).
"""

from __future__ import annotations

import json
import os
import subprocess
import time

from bench import client
from bench.endpoints import ENDPOINTS
from bench.procs import Processes, children_of, wait_until
from bench.profiles import all_workers
from bench.reads import _record, measure
from bench.report import Budget, Figure, Scenario
from bench.ports import free_port
from bench.stack import appliance_argv, toml_value, write_ids

NOVA_WORKERS = 2                 # gunicorn workers, one thread each (a sync worker)
NOVA_TOKEN = "admin:project-admin:admin"    # the harness's token stand-in: an admin
APPLIANCE_TOKEN = "admin:project-admin"     # noauth: user "admin" is an admin
PROJECTS = 4                     # servers spread over this many projects
BUILD_CHUNK = 250                # servers per writer call (progress between calls)
FLAVOR = "2"
BUDGETS = {"show": Budget(">=", 100, "ratio"), "detail1000": Budget(">=", 300, "ratio")}
FEEDS = ("cell0", "cell1", "flavors")
READY_TIMEOUT_S = 180.0


class NovaSide:
    """The deployment, its Neutron stand-in and nova-api over it."""

    def __init__(self, workdir: str, servers: int, log):
        from tests.realnova.nova_api import NeutronStub, NovaAPI
        from tests.realnova.novadb import NovaDeployment

        os.makedirs(workdir, exist_ok=True)
        self.neutron = NeutronStub().start()
        self.api = None
        self.ids: list[str] = []
        try:
            started = time.monotonic()
            self.deployment = NovaDeployment.on_sqlite(workdir).create()
            log(f"  Nova deployment (nova-manage, SQLite) made in "
                f"{time.monotonic() - started:.1f} s; writing {servers:,} servers with "
                f"Nova's objects")
            self._populate(servers, log)
            self.api = NovaAPI(self.deployment, self.neutron, workers=NOVA_WORKERS,
                               threads=1).start()
        except BaseException:
            self.stop()
            raise
        self.url = self.api.url
        self.pid = self.api.process.pid

    def _populate(self, servers: int, log) -> None:
        started = last = time.monotonic()
        with self.deployment.writer() as nova:
            nova.create_flavor(name="m1.small", vcpus=1, memory_mb=2048, root_gb=20,
                               flavorid=FLAVOR)
            nova.create_compute(host="compute-1", az="zone-1")
            done = 0
            while done < servers:
                count = min(BUILD_CHUNK, servers - done)
                project = done // BUILD_CHUNK % PROJECTS
                built = nova.build_servers(
                    count=count, name_prefix=f"vm{done}", user_id=f"user-{project}",
                    project_id=f"project-{project}", flavor=FLAVOR, host="compute-1",
                    metadata={"role": "bench"})
                for server in built["servers"]:
                    self.neutron.add_server(server)
                    self.ids.append(server["uuid"])
                done += count
                if time.monotonic() - last >= 10:
                    last = time.monotonic()
                    log(f"    {done:,}/{servers:,} servers written")
        log(f"  {servers:,} servers written in {time.monotonic() - started:.1f} s")

    def pids(self) -> list[int]:
        return [self.pid, *children_of(self.pid)]

    def stop(self) -> None:
        if self.api is not None:
            self.api.stop()
            self.api = None
        self.neutron.stop()


class ApplianceOverNova:
    """Publishers over the deployment's SQLite files and an appliance fed by them."""

    def __init__(self, directory: str, nova: NovaSide, procs: Processes, workers: int):
        # Publishers, appliance: started by ``start``, stopped by ``stop``.
        self.dir = directory
        self.nova = nova
        self.procs = procs
        self.workers = workers
        os.makedirs(directory, exist_ok=True)
        paths = nova.deployment.database_paths
        self.api_db = paths["api"]
        self.feeds = {name: {"db": db, "feed": f"tcp://127.0.0.1:{free_port()}",
                             "control": f"tcp://127.0.0.1:{free_port()}"}
                      for name, db in (("cell0", paths["cell0"]), ("cell1", paths["cell1"]),
                                       ("flavors", paths["api"]))}
        self.port, self.admin_port = free_port(), free_port()
        self.data_dir = os.path.join(directory, "data")
        self.appliance = None
        self.publishers = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, expected_servers: int) -> "ApplianceOverNova":
        for name, feed in self.feeds.items():
            extra = ["--flavors"] if name == "flavors" else []
            subprocess.run([*appliance_argv(), "cell", "init", "--db", feed["db"], "--name",
                            name, *extra], check=True, capture_output=True, timeout=120)
        for name, feed in self.feeds.items():
            argv = [*appliance_argv(), "cell", "--db", feed["db"], "--name", name,
                    "--feed", feed["feed"], "--control", feed["control"]]
            if name != "flavors":
                argv += ["--api-db", self.api_db, "--neutron-url", self.nova.neutron.url]
            self.publishers.append(self.procs.start(
                f"publisher {name}", argv,
                log_path=os.path.join(self.dir, f"{name}.publisher.log")))
        lines = ['listen_host = "127.0.0.1"', f"listen_port = {self.port}",
                 'admin_host = "127.0.0.1"', f"admin_port = {self.admin_port}",
                 f"workers = {self.workers}", f"data_dir = {toml_value(self.data_dir)}",
                 'log_level = "warning"']
        for name, feed in self.feeds.items():
            kind = "flavors" if name == "flavors" else "servers"
            lines += ["[[cell]]", f'name = "{name}"', f'kind = "{kind}"',
                      f'feed = "{feed["feed"]}"', f'control = "{feed["control"]}"']
        config = os.path.join(self.dir, "appliance.toml")
        with open(config, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.appliance = self.procs.start(
            "appliance over nova", [*appliance_argv(), "serve", "--config", config],
            log_path=os.path.join(self.dir, "appliance.log"))
        wait_until(lambda: self._live(expected_servers), READY_TIMEOUT_S,
                   f"the appliance over Nova live with {expected_servers} servers",
                   interval=0.2, proc=self.appliance)
        return self

    def _live(self, expected_servers: int) -> bool:
        try:
            status = client.get_json(f"http://127.0.0.1:{self.admin_port}/status", timeout=5)
        except Exception:   # not listening yet
            return False
        cells = {c.get("cell"): c for c in status.get("cells", [])}
        return (set(cells) == set(FEEDS) and all(c.get("state") == "live" for c in cells.values())
                and cells["cell1"].get("servers") == expected_servers)

    def pids(self) -> list[int]:
        return children_of(self.appliance.pid) if self.appliance is not None else []

    def stop(self) -> None:
        if self.appliance is not None:
            self.procs.stop(self.appliance)
            self.appliance = None
        while self.publishers:
            self.procs.stop(self.publishers.pop())


def run(sc: Scenario, procs: Processes, profile, root: str, log) -> None:
    workdir = os.path.join(root, "novaapi")
    started = time.monotonic()
    nova = NovaSide(os.path.join(workdir, "nova"), profile.novaapi_servers, log)
    appliance = None
    measured = {}
    try:
        log(f"  nova-api ({NOVA_WORKERS} sync workers) on {nova.url}")
        appliance = ApplianceOverNova(os.path.join(workdir, "appliance"), nova, procs,
                                      all_workers())
        appliance.start(profile.novaapi_servers)
        setup_s = time.monotonic() - started
        log(f"  the appliance over the same databases on {appliance.base_url} "
            f"({all_workers()} workers); set up in {setup_s:.1f} s")
        sc.runs.append({"kind": "stack", "servers": profile.novaapi_servers,
                        "setup_s": setup_s, "nova_workers": NOVA_WORKERS})
        ids_file = write_ids(os.path.join(workdir, "ids.txt"), nova.ids)
        # nova-api's sync workers take one request each: more connections than workers
        # only queue (a detail?limit=1000 then waits past wrk's 30 s timeout), at the
        # same requests/s.
        nova_connections = min(profile.novaapi_connections, NOVA_WORKERS)
        targets = (("appliance", appliance.base_url, {"X-Auth-Token": APPLIANCE_TOKEN},
                    appliance.pids, profile.novaapi_connections),
                   ("nova-api", nova.url, {"X-Auth-Token": NOVA_TOKEN}, nova.pids,
                    nova_connections))
        for key in profile.novaapi_endpoints:
            endpoint = ENDPOINTS[key]
            for name, url, headers, pids, connections in targets:
                _check(url, endpoint, nova.ids[0], headers, profile.novaapi_servers)
                result = measure(url, endpoint, connections, profile.read_duration_s,
                                 ids_file, pids, headers=headers)
                measured[(key, name)] = result
                _record(sc, name, endpoint,
                        all_workers() if name == "appliance" else NOVA_WORKERS,
                        profile.novaapi_servers, result)
                log(f"    {endpoint.label:<34} c{connections} {name:<10} "
                    f"{result.requests_per_s:>9,.1f} req/s  p50 {result.p50_ms:8.2f} ms  "
                    f"p99 {result.p99_ms:8.2f} ms  errors {result.error_count}")
    finally:
        if appliance is not None:
            appliance.stop()
        nova.stop()
    for key in profile.novaapi_endpoints:
        mine, theirs = measured[(key, "appliance")], measured[(key, "nova-api")]
        label = ENDPOINTS[key].label
        sc.add(Figure(f"{label} vs nova-api", mine.requests_per_s, "req/s",
                      theirs.requests_per_s, "nova-api", BUDGETS.get(key),
                      {"connections": mine.connections, "nova_connections": theirs.connections,
                       "p50_ms": mine.p50_ms, "p99_ms": mine.p99_ms,
                       "nova_p50_ms": theirs.p50_ms, "nova_p99_ms": theirs.p99_ms,
                       "errors": mine.error_count, "nova_errors": theirs.error_count}))
        sc.add(Figure(f"{label} p99 vs nova-api", mine.p99_ms, "ms", theirs.p99_ms,
                      "nova-api"))


def _check(url: str, endpoint, show_id: str, headers: dict, servers: int) -> None:
    """One request first, on each server: 200 and a full page."""
    path = endpoint.path or f"/v2.1/servers/{show_id}"
    status, _h, body = client.request(url + path, timeout=300, headers=headers)
    if status != 200:
        raise RuntimeError(f"GET {url}{path}: HTTP {status}: {body[:300]!r}")
    if endpoint.expect_servers is not None:
        got = len(json.loads(body).get("servers", []))
        if got < min(endpoint.expect_servers, servers):
            raise RuntimeError(f"GET {url}{path}: {got} servers, expected "
                               f"{min(endpoint.expect_servers, servers)}")
