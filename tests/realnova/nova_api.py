"""Real nova-api for tests: Nova 34's own WSGI application and paste pipeline (the side
environment's ``etc/nova/api-paste.ini``) under gunicorn on a free loopback port, reading a
:class:`~tests.realnova.novadb.NovaDeployment`'s databases, with two stand-ins:

- keystonemiddleware's ``auth_token`` filter is replaced by ``nova_side/token_headers.py``:
  ``X-Auth-Token: USER:PROJECT`` (member) or ``USER:PROJECT:admin`` becomes the identity
  headers keystonemiddleware would pass on;
- Neutron is :class:`NeutronStub`, a small HTTP server answering the two calls nova-api makes
  to show servers' security groups (``GET /v2.0/ports?device_id=...`` and
  ``GET /v2.0/security-groups?id=...``) from the ports the writer reported.
- Keystone's identity API is :class:`IdentityStub` (``[keystone] endpoint_override``), which
  answers the one call nova-api makes to it: ``GET /v3/projects/{id}``, Nova's check that a
  project exists before a quota set is read; every project exists (the tokens are noauth's).

    neutron = NeutronStub().start()
    api = NovaAPI(deployment, neutron).start()
    status, body = api.get("/v2.1/servers/detail", token="user-a:project-a",
                           microversion="2.100")
    api.stop(); neutron.stop()
"""

from __future__ import annotations

import configparser
import http.client
import http.server
import json
import os
import signal
import subprocess
import threading
import time
import urllib.parse
import uuid as uuidlib

import pytest

from tests.conftest import free_port
from tests.realnova.mariadb import child_setup
from tests.realnova.novadb import NovaDeployment
from tests.realnova.processes import log_tail, stop_process

NOVA_SIDE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nova_side")
START_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0
# Neutron's extensions as the stub reports them: only what changes nova-api's reads
# (ip-substring-filtering: the ip and ip6 filters of the server lists ask Neutron's ports)
EXTENSIONS = ("ip-substring-filtering",)


class JsonStub:
    """A small JSON HTTP server on a free loopback port for a service nova-api calls:
    ``answer(method, path) -> (status, body)`` says what it answers. ``start()`` returns
    the stub (``url`` set); ``stop()`` shuts it down."""

    name = "stub"

    def __init__(self):
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = None

    def answer(self, method: str, path: str) -> tuple[int, dict]:
        raise NotImplementedError

    def start(self):
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _reply(self):
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                status, body = stub.answer(self.command, self.path)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _reply

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(10)
            self._server = None


class NeutronStub(JsonStub):
    """Ports and security groups as Neutron's API lists them, for nova-api (and anything
    else that asks Neutron for a server's security groups). Thread-safe; records requests."""

    name = "neutron-stub"

    def __init__(self):
        super().__init__()
        self.ports: dict[str, dict] = {}
        self.security_groups: dict[str, dict] = {}
        self.requests: list[str] = []
        self._lock = threading.Lock()

    # -- data ----------------------------------------------------------------------------

    def security_group(self, project_id: str, name: str, sg_id: str | None = None) -> str:
        """The id of the project's security group called ``name`` (made on first use)."""
        sg_id = sg_id or str(uuidlib.uuid5(uuidlib.NAMESPACE_URL,
                                           f"realnova:sg:{project_id}:{name}"))
        with self._lock:
            self.security_groups.setdefault(sg_id, {
                "id": sg_id, "name": name, "tenant_id": project_id,
                "project_id": project_id, "description": "", "security_group_rules": [],
                "stateful": True, "shared": False, "tags": [], "revision_number": 1})
        return sg_id

    def add_port(self, port: dict):
        """A port as the writer reports it (``id``, ``device_id``, ``tenant_id``,
        ``security_group_names``, addresses); its security groups are made by name."""
        names = port.get("security_group_names") or []
        sg_ids = [self.security_group(port["tenant_id"], name) for name in names]
        with self._lock:
            self.ports[port["id"]] = {
                "id": port["id"], "device_id": port["device_id"],
                "device_owner": "compute:nova", "network_id": port.get("network_id"),
                "mac_address": port.get("mac_address"), "tenant_id": port["tenant_id"],
                "project_id": port["tenant_id"], "status": "ACTIVE",
                "admin_state_up": True, "security_groups": sg_ids,
                "fixed_ips": [{"ip_address": a} for a in port.get("fixed_ips", [])]}

    def add_server(self, server: dict):
        """Every port of a server the writer built (its ``build_server`` result)."""
        for port in server.get("ports", []):
            self.add_port(port)

    def set_port_security_groups(self, port_id: str, names: list[str]):
        """A security group change (it touches no Nova table)."""
        port = self.ports[port_id]
        sg_ids = [self.security_group(port["tenant_id"], name) for name in names]
        with self._lock:
            port["security_groups"] = sg_ids

    def remove_server(self, device_id: str):
        with self._lock:
            for port_id in [p for p, port in self.ports.items()
                            if port["device_id"] == device_id]:
                del self.ports[port_id]

    # -- HTTP ----------------------------------------------------------------------------

    def _list(self, collection: str, items, query: dict) -> dict:
        fields = query.pop("fields", None)
        # Neutron's ip-substring-filtering: fixed_ips=ip_address_substr=X (nova-api's
        # ip and ip6 filters); any other fixed_ips filter is not stubbed
        substrings = [v.split("=", 1)[1] for v in query.pop("fixed_ips", [])
                      if v.startswith("ip_address_substr=")]
        selected = []
        for item in items:
            if substrings and not any(s in ip.get("ip_address", "") for s in substrings
                                      for ip in item.get("fixed_ips", [])):
                continue
            if all(str(item.get(key)) in values for key, values in query.items()):
                selected.append({k: v for k, v in item.items() if not fields or k in fields})
        return {collection: selected}

    def answer(self, method: str, path: str) -> tuple[int, dict]:
        parsed = urllib.parse.urlsplit(path)
        query = urllib.parse.parse_qs(parsed.query)
        with self._lock:
            self.requests.append(f"{method} {path}")
            ports = [dict(p) for p in self.ports.values()]
            groups = [dict(g) for g in self.security_groups.values()]
        route = parsed.path.rstrip("/")
        if method == "GET" and route in ("/v2.0/extensions", "/v2.0/extensions.json"):
            return 200, {"extensions": [{"alias": alias, "name": alias, "description": "",
                                         "updated": "2017-11-28T00:00:00-00:00",
                                         "links": []} for alias in EXTENSIONS]}
        if method == "GET" and route in ("/v2.0/ports", "/v2.0/ports.json"):
            return 200, self._list("ports", ports, query)
        if method == "GET" and route in ("/v2.0/security-groups",
                                         "/v2.0/security-groups.json"):
            return 200, self._list("security_groups", groups, query)
        for prefix, collection, items in (("/v2.0/ports/", "port", ports),
                                          ("/v2.0/security-groups/", "security_group",
                                           groups)):
            if method == "GET" and route.startswith(prefix):
                wanted = route[len(prefix):]
                for item in items:
                    if item["id"] == wanted:
                        return 200, {collection: item}
        return 404, {"NeutronError": {"type": "HTTPNotFound", "detail": "",
                                      "message": f"The resource could not be found: {path}"}}

class IdentityStub(JsonStub):
    """Keystone's ``GET /v3/projects/{id}`` for nova-api's project check (nova's
    ``verify_project_id``, before a quota set is shown): every project exists. Records the
    project ids asked for."""

    name = "identity-stub"

    def __init__(self):
        super().__init__()
        self.asked: list[str] = []

    def answer(self, method: str, path: str) -> tuple[int, dict]:
        route = urllib.parse.urlsplit(path).path.rstrip("/")
        if method == "GET" and route.startswith("/v3/projects/"):
            project_id = urllib.parse.unquote(route[len("/v3/projects/"):])
            self.asked.append(project_id)
            return 200, {"project": {
                "id": project_id, "name": project_id, "domain_id": "default",
                "enabled": True, "is_domain": False, "parent_id": "default"}}
        return 404, {"error": {"code": 404, "title": "Not Found",
                               "message": "Could not find the resource."}}


class NovaAPIError(RuntimeError):
    pass


class NovaAPI:
    """nova-api (Nova's WSGI app and paste pipeline) under gunicorn, one worker."""

    def __init__(self, deployment: NovaDeployment, neutron: NeutronStub,
                 port: int | None = None, workers: int = 1, threads: int = 4):
        self.deployment = deployment
        self.neutron = neutron
        self.port = port or free_port()
        self.workers = workers
        self.threads = threads
        self.workdir = os.path.join(deployment.workdir, "nova-api")
        self.paste_file = os.path.join(self.workdir, "api-paste.ini")
        self.log_path = os.path.join(self.workdir, "nova-api.log")
        self.process: subprocess.Popen | None = None
        self.identity: IdentityStub | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    def __str__(self):
        """The base URL, so ``f"{nova_api}/v2.1/servers"`` reads as a URL."""
        return self.url

    def write_paste_config(self):
        """Nova's own api-paste.ini with the ``authtoken`` filter pointing at the
        token-to-headers stand-in; everything else as Nova ships it."""
        shipped = os.path.join(self.deployment.env.root, "etc", "nova", "api-paste.ini")
        if not os.path.exists(shipped):
            raise NovaAPIError(f"{shipped} is missing: the side environment's Nova package "
                               f"has no api-paste.ini")
        paste = configparser.ConfigParser(interpolation=None)
        paste.optionxform = str
        paste.read(shipped)
        paste["filter:authtoken"] = {"paste.filter_factory": "token_headers:filter_factory"}
        os.makedirs(self.workdir, exist_ok=True)
        with open(self.paste_file, "w") as f:
            paste.write(f)

    def start(self) -> "NovaAPI":
        self.write_paste_config()
        self.identity = IdentityStub().start()
        self.deployment.write_config(
            DEFAULT={"host": "nova-api-test"},
            neutron={"endpoint_override": self.neutron.url, "region_name": "RegionOne",
                     "http_retries": "0", "timeout": "30"},
            keystone={"endpoint_override": self.identity.url + "/v3",
                      "region_name": "RegionOne"},
            wsgi={"api_paste_config": self.paste_file},
        )
        config_dir = os.path.dirname(self.deployment.config_file)
        env = self.deployment.env.subprocess_env(
            OS_NOVA_CONFIG_DIR=config_dir,
            OS_NOVA_CONFIG_FILES=f"{os.path.relpath(self.paste_file, config_dir)};"
                                 f"{os.path.basename(self.deployment.config_file)}")
        command = [self.deployment.env.program("gunicorn"),
                   "--bind", f"127.0.0.1:{self.port}", "--workers", str(self.workers),
                   "--worker-class", "gthread", "--threads", str(self.threads),
                   "--timeout", "120", "--graceful-timeout", "5",
                   # gunicorn 26 opens a control socket in $HOME by default: one per
                   # machine, which parallel test runs would fight over.
                   "--no-control-socket",
                   "--chdir", NOVA_SIDE, "--pythonpath", NOVA_SIDE,
                   "nova_api_wsgi:application"]
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env=env, cwd=self.workdir,
                                        preexec_fn=child_setup())
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise NovaAPIError(f"nova-api (gunicorn) exited with "
                                   f"{self.process.returncode}:\n{self.log_tail()}")
            try:
                status, _body = self.get("/v2.1/flavors", token="harness:harness")
                if status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise NovaAPIError(f"nova-api did not answer within {START_TIMEOUT}s:\n"
                           f"{self.log_tail()}")

    def request(self, method: str, path: str, token: str | None = None,
                microversion: str | None = None, body=None, headers=None,
                timeout: float = 60.0) -> tuple[int, object, dict]:
        """``(status, parsed JSON body or raw bytes, headers)``."""
        sent = dict(headers or {})
        if token is not None:
            sent["X-Auth-Token"] = token
        if microversion is not None:
            sent["OpenStack-API-Version"] = f"compute {microversion}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=data, headers=sent)
            response = conn.getresponse()
            raw = response.read()
            received = {k.lower(): v for k, v in response.getheaders()}
        finally:
            conn.close()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw
        return response.status, parsed, received

    def get(self, path: str, token: str | None = None, microversion: str | None = None):
        status, body, _headers = self.request("GET", path, token, microversion)
        return status, body

    def log_tail(self, size: int = 8000) -> str:
        return log_tail(self.log_path, size)

    def stop(self):
        if self.identity is not None:
            self.identity.stop()
            self.identity = None
        if self.process is None:
            return
        stop_process(self.process, signal.SIGINT, STOP_TIMEOUT)     # gunicorn's quick shutdown
        self.process = None
        self._log.close()


def neutron_stub_fixture(scope: str = "module", name: str | None = None):
    """A fixture yielding a started :class:`NeutronStub`."""
    @pytest.fixture(scope=scope, name=name)
    def _neutron():
        stub = NeutronStub().start()
        try:
            yield stub
        finally:
            stub.stop()
    return _neutron


def nova_api_fixture(deployment_fixture: str, neutron_fixture: str = "neutron",
                     scope: str = "module", name: str | None = None):
    """A fixture yielding a started :class:`NovaAPI` over the deployment of the fixture
    ``deployment_fixture``; ``.url`` (also ``str()``) is its base URL, e.g.
    ``http://127.0.0.1:PORT``. Stopped at teardown."""
    @pytest.fixture(scope=scope, name=name)
    def _nova_api(request):
        deployment = request.getfixturevalue(deployment_fixture)
        neutron = request.getfixturevalue(neutron_fixture)
        api = NovaAPI(deployment, neutron).start()
        try:
            yield api
        finally:
            api.stop()
    return _nova_api
