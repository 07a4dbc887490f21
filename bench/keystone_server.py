"""A real Keystone 30 (for the edge tests and the ``edge`` benchmark): SQLite database, fernet keys and the config in a temporary
directory, ``keystone-manage`` for db_sync / fernet_setup / credential_setup / bootstrap,
served by the side environment's gunicorn on a free loopback port.

``Keystone`` then makes what an edge region needs, through Keystone's own REST API: two
projects with reader, member and admin users, a service user for the appliance (role
``service`` on the ``service`` project), and an ``edge`` region whose compute endpoint
is the appliance. ``stop()`` / ``start()`` stop and restart the server on the same
port (a Keystone cut off from the edge). ``tests/realnova/keystone.py`` is the tests'
name for this module."""

from __future__ import annotations

import grp
import json
import os
import pwd
import signal
import subprocess
from dataclasses import dataclass, field

import requests

from bench.procs import wait_until
from bench.side_env import nova_env
from bench.ports import free_port

ADMIN_PASSWORD = "admin-secret"
PASSWORD = "user-secret"
SERVICE_USER = "appliance"
SERVICE_PASSWORD = "appliance-secret"
CORE_REGION = "RegionOne"
EDGE_REGION = "edge"
# The WSGI entry sits in its own directory: on gunicorn's path, this file would shadow
# the keystone package.
ENTRY_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "keystone_entry")

CONF = """\
[DEFAULT]
log_file = {dir}/keystone.log
[database]
connection = sqlite:///{dir}/keystone.db
[fernet_tokens]
key_repository = {dir}/fernet-keys
[fernet_receipts]
key_repository = {dir}/fernet-keys
[credential]
key_repository = {dir}/credential-keys
[token]
expiration = {expiration}
"""


class KeystoneError(AssertionError):
    """Keystone answered something else than the step expected (an AssertionError, so a
    test reads it as a failed check)."""


def _expect(response, status: int | None, what: str) -> None:
    """``status``, or any 2xx when None."""
    ok = response.status_code < 300 if status is None else response.status_code == status
    if not ok:
        raise KeystoneError(f"{what}: {response.status_code} {response.text}")


@dataclass
class Keystone:
    directory: str
    port: int
    proc: subprocess.Popen | None = None
    projects: dict = field(default_factory=dict)     # name -> id
    users: dict = field(default_factory=dict)        # name -> id
    roles: dict = field(default_factory=dict)        # name -> id

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- process ----------------------------------------------------------------------

    def manage(self, *args: str) -> None:
        env = nova_env()
        subprocess.run([env.program("keystone-manage"), "--config-file",
                        os.path.join(self.directory, "keystone.conf"), *args],
                       check=True, env=env.subprocess_env(), capture_output=True, timeout=300)

    def start(self) -> None:
        env = nova_env()
        log = open(os.path.join(self.directory, "gunicorn.log"), "ab")
        self.proc = subprocess.Popen(
            [env.program("gunicorn"), "--bind", f"127.0.0.1:{self.port}", "--workers", "1",
             "--threads", "4", "--pythonpath", ENTRY_DIR, "keystone_public:application"],
            env=env.subprocess_env(OS_KEYSTONE_CONFIG_DIR=self.directory),
            stdout=log, stderr=log, start_new_session=True)
        log.close()
        try:
            wait_until(lambda: self.proc.poll() is not None or self._answers(), 60,
                       f"Keystone on {self.url}", interval=0.02)
            if self.proc.poll() is not None:
                with open(os.path.join(self.directory, "gunicorn.log"),
                          errors="replace") as f:
                    tail = f.read()[-1500:]
                raise RuntimeError(f"Keystone's gunicorn exited ({self.proc.returncode}): "
                                   f"{tail}")
        except BaseException:
            self.stop()
            raise

    def _answers(self) -> bool:
        return requests.get(self.url + "/v3", timeout=2).status_code == 200

    def configure(self, expiration: int = 3600) -> None:
        """(Re)write keystone.conf; ``expiration``: lifetime of new tokens in seconds.
        Takes effect at the next ``start()``."""
        with open(os.path.join(self.directory, "keystone.conf"), "w") as f:
            f.write(CONF.format(dir=self.directory, expiration=expiration))

    def restart(self, expiration: int = 3600) -> None:
        self.stop()
        self.configure(expiration)
        self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # SIGINT: gunicorn's quick shutdown (SIGTERM would wait for kept-alive
            # connections, such as the appliance's, up to its graceful timeout).
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    # -- REST -------------------------------------------------------------------------

    def token(self, user: str, password: str, project: str | None = None,
              domain: str = "Default") -> str:
        auth = {"identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"name": domain}, "password": password}}}}
        if project:
            auth["scope"] = {"project": {"name": project, "domain": {"name": domain}}}
        r = requests.post(self.url + "/v3/auth/tokens?nocatalog", json={"auth": auth},
                          timeout=10)
        _expect(r, 201, f"token for {user}")
        return r.headers["X-Subject-Token"]

    def admin_token(self) -> str:
        return self.token("admin", ADMIN_PASSWORD, "admin")

    def call(self, method: str, path: str, body: dict | None = None, token: str | None = None):
        r = requests.request(method, self.url + path, json=body, timeout=10,
                             headers={"X-Auth-Token": token or self.admin_token()})
        _expect(r, None, f"{method} {path}")
        return r.json() if r.content else None

    def revoke(self, token: str) -> None:
        r = requests.delete(self.url + "/v3/auth/tokens", timeout=10,
                            headers={"X-Auth-Token": self.admin_token(),
                                     "X-Subject-Token": token})
        _expect(r, 204, "revoke a token")

    def _load_roles(self, admin: str) -> None:
        """The roles by name, with a ``service`` role made if there is none."""
        self.roles = {r["name"]: r["id"] for r in self.call("GET", "/v3/roles",
                                                             token=admin)["roles"]}
        if "service" not in self.roles:
            self.roles["service"] = self.call("POST", "/v3/roles",
                                              {"role": {"name": "service"}}, admin)["role"]["id"]

    def _add_projects(self, names, admin: str) -> None:
        for project in names:
            self.projects[project] = self.call(
                "POST", "/v3/projects", {"project": {"name": project, "domain_id": "default"}},
                admin)["project"]["id"]
        self.projects["admin"] = self.call("GET", "/v3/projects?name=admin",
                                           token=admin)["projects"][0]["id"]

    def _add_user(self, name: str, password: str, project: str, role: str,
                  admin: str) -> None:
        user = self.call("POST", "/v3/users", {"user": {
            "name": name, "password": password, "domain_id": "default"}}, admin)["user"]
        self.users[name] = user["id"]
        self.call("PUT", f"/v3/projects/{self.projects[project]}/users/{user['id']}"
                         f"/roles/{self.roles[role]}", token=admin)

    def add_service_user(self) -> None:
        """Only the appliance's service user (role ``service`` on the ``service`` project):
        what an appliance with ``auth = "keystone"`` needs; the admin user reads."""
        admin = self.admin_token()
        self._load_roles(admin)
        self._add_projects(("service",), admin)
        self._add_user(SERVICE_USER, SERVICE_PASSWORD, "service", "service", admin)

    def populate(self, compute_url: str, core_compute_url: str | None = None) -> None:
        """Projects, users, roles, the service user and the edge region's catalog."""
        admin = self.admin_token()
        self._load_roles(admin)
        self._add_projects(("alpha", "beta", "service"), admin)
        grants = [(f"{p}-{role}", PASSWORD, p, role)
                  for p in ("alpha", "beta") for role in ("reader", "member", "admin")]
        grants.append((SERVICE_USER, SERVICE_PASSWORD, "service", "service"))
        for name, password, project, role in grants:
            self._add_user(name, password, project, role, admin)
        self.call("POST", "/v3/regions", {"region": {"id": EDGE_REGION}}, admin)
        # The edge region: identity stays the core's, compute is the appliance.
        identity = next(s for s in self.call("GET", "/v3/services", token=admin)["services"]
                        if s["type"] == "identity")
        compute = self.call("POST", "/v3/services", {"service": {
            "type": "compute", "name": "nova", "enabled": True}}, admin)["service"]
        endpoints = [(identity["id"], EDGE_REGION, self.url),
                     (compute["id"], EDGE_REGION, compute_url)]
        if core_compute_url:
            endpoints.append((compute["id"], CORE_REGION, core_compute_url))
        for service_id, region, url in endpoints:
            for interface in ("public", "internal"):
                self.call("POST", "/v3/endpoints", {"endpoint": {
                    "service_id": service_id, "region_id": region, "interface": interface,
                    "url": url, "enabled": True}}, admin)

    def add_region(self, region: str, compute_url: str) -> None:
        """Another region: identity is the core's, compute is ``compute_url``."""
        admin = self.admin_token()
        self.call("POST", "/v3/regions", {"region": {"id": region}}, admin)
        services = self.call("GET", "/v3/services", token=admin)["services"]
        for kind, url in (("identity", self.url), ("compute", compute_url)):
            service = next(s for s in services if s["type"] == kind)
            for interface in ("public", "internal"):
                self.call("POST", "/v3/endpoints", {"endpoint": {
                    "service_id": service["id"], "region_id": region,
                    "interface": interface, "url": url, "enabled": True}}, admin)

    def clouds_yaml(self, path: str, user: str, project: str, region: str = EDGE_REGION,
                    cacert: str | None = None) -> str:
        """A clouds.yaml with one cloud, ``edge``, for a password user (JSON is YAML)."""
        cloud = {"auth": {"auth_url": self.url + "/v3", "username": user,
                          "password": PASSWORD, "project_name": project,
                          "user_domain_name": "Default", "project_domain_name": "Default"},
                 "region_name": region, "identity_api_version": 3, "interface": "public"}
        if cacert:
            cloud["cacert"] = cacert
        with open(path, "w") as f:
            json.dump({"clouds": {"edge": cloud}}, f)
        return path


def make_keystone(directory: str, expiration: int = 3600) -> Keystone:
    """Configure, initialise and start a Keystone in ``directory`` (not populated)."""
    os.makedirs(directory, exist_ok=True)
    keystone = Keystone(directory, free_port())
    keystone.configure(expiration)
    user = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    keystone.manage("db_sync")
    keystone.manage("fernet_setup", "--keystone-user", user, "--keystone-group", group)
    keystone.manage("credential_setup", "--keystone-user", user, "--keystone-group", group)
    keystone.manage("bootstrap", "--bootstrap-password", ADMIN_PASSWORD,
                    "--bootstrap-admin-url", keystone.url,
                    "--bootstrap-public-url", keystone.url,
                    "--bootstrap-internal-url", keystone.url,
                    "--bootstrap-region-id", CORE_REGION)
    keystone.start()
    return keystone
