"""A Nova deployment's databases made and written by Nova itself: ``nova-manage`` creates the
schema (``api_db sync``, ``cell_v2 map_cell0``, ``cell_v2 create_cell --name cell1``,
``db sync``) on MariaDB or SQLite, and :class:`NovaWriter` (``nova_side/writer.py`` under the
side environment's python) writes flavors, hosts and servers with Nova's own objects.

    deployment = NovaDeployment.on_mariadb(mariadb, workdir)     # or .on_sqlite(workdir)
    deployment.create()                                         # nova-manage
    with deployment.writer() as nova:
        nova.create_flavor(name="m1.small", vcpus=1, memory_mb=2048, root_gb=20, flavorid="2")
        nova.create_compute(host="compute-1", az="az-1")
        server = nova.build_server(user_id="u1", project_id="p1", flavor="2", name="vm-1")
        nova.stop(uuid=server["uuid"])
    deployment.archive_deleted_rows()

Fixture factories at the bottom give a module- or session-scoped deployment.
"""

from __future__ import annotations

import configparser
import functools
import json
import os
import sqlite3
import subprocess
import threading

import pytest

from tests.realnova.env import NovaEnv, nova_env
from tests.realnova.mariadb import scratch_dir
from tests.realnova.processes import log_tail

WRITER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nova_side",
                             "writer.py")
CREATE_SCRIPT = os.path.join(os.path.dirname(WRITER_SCRIPT), "create_deployment.py")
CELL_NAME = "cell1"
NOVA_DB_USER = "nova"
NOVA_DB_PASSWORD = "nova-db-secret"
MANAGE_TIMEOUT = 300
WRITER_START_TIMEOUT = 120


class NovaCommandError(RuntimeError):
    """A Nova tool (nova-manage, the writer) failed; the message carries its output."""


class NovaDeployment:
    """The three databases of a one-cell Nova deployment and the nova.conf that names them."""

    def __init__(self, workdir: str, api_url: str, cell0_url: str, cell_url: str,
                 backend: str, env: NovaEnv | None = None):
        self.workdir = os.path.abspath(workdir)
        self.api_url = api_url
        self.cell0_url = cell0_url
        self.cell_url = cell_url
        self.backend = backend
        self.env = env or nova_env()
        self.config_file = os.path.join(self.workdir, "nova.conf")
        self.mariadb = None                 # on_mariadb: the server and database names
        self.database_names: list[str] = []
        self.database_paths: dict[str, str] = {}      # on_sqlite: the files
        self.extra_config: dict[str, dict[str, str]] = {}
        os.makedirs(os.path.join(self.workdir, "state"), exist_ok=True)
        os.makedirs(os.path.join(self.workdir, "locks"), exist_ok=True)
        self.write_config()

    @classmethod
    def on_mariadb(cls, mariadb, workdir: str, prefix: str = "", env: NovaEnv | None = None):
        """Databases ``{prefix}nova_api``, ``{prefix}nova_cell0``, ``{prefix}nova_cell1`` on
        the server, owned by a ``nova`` user with all privileges on them (as a deployment
        guide sets it up). A ``prefix`` lets several deployments share one server."""
        names = [f"{prefix}nova_api", f"{prefix}nova_cell0", f"{prefix}nova_{CELL_NAME}"]
        for name in names:
            mariadb.create_database(name)
        mariadb.create_user(NOVA_DB_USER, NOVA_DB_PASSWORD, names)
        urls = [mariadb.url(name, NOVA_DB_USER, NOVA_DB_PASSWORD) for name in names]
        deployment = cls(workdir, *urls, backend="mariadb", env=env)
        deployment.database_names = names
        deployment.mariadb = mariadb
        return deployment

    @classmethod
    def on_sqlite(cls, workdir: str, env: NovaEnv | None = None):
        """SQLite files ``nova_api.sqlite``, ``nova_cell0.sqlite``, ``nova_cell1.sqlite`` in
        ``workdir``."""
        workdir = os.path.abspath(workdir)
        os.makedirs(workdir, exist_ok=True)
        paths = [os.path.join(workdir, f"nova_{name}.sqlite")
                 for name in ("api", "cell0", CELL_NAME)]
        deployment = cls(workdir, *(f"sqlite:///{p}" for p in paths), backend="sqlite",
                         env=env)
        deployment.database_paths = dict(zip(("api", "cell0", CELL_NAME), paths))
        return deployment

    # -- configuration ------------------------------------------------------------------

    def write_config(self, **sections: dict[str, str]):
        """Write nova.conf; ``sections`` (e.g. ``neutron={...}``) add to or override the base
        settings and are kept for later writes."""
        for section, values in sections.items():
            self.extra_config.setdefault(section, {}).update(values)
        config = configparser.ConfigParser(interpolation=None)
        config.read_dict({
            "DEFAULT": {"transport_url": "fake://", "state_path": f"{self.workdir}/state",
                        "debug": "false", "use_stderr": "true"},
            "api_database": {"connection": self.api_url},
            "database": {"connection": self.cell_url},
            "oslo_concurrency": {"lock_path": f"{self.workdir}/locks"},
            "oslo_messaging_notifications": {"driver": "noop"},
            "oslo_policy": {"enforce_scope": "true", "enforce_new_defaults": "true"},
        })
        if self.backend == "sqlite":
            # No fsync per commit: test data, and several times faster bulk writes.
            config.read_dict({"database": {"sqlite_synchronous": "false"},
                              "api_database": {"sqlite_synchronous": "false"}})
        config.read_dict(self.extra_config)
        with open(self.config_file, "w") as f:
            config.write(f)

    # -- nova-manage ----------------------------------------------------------------------

    def manage(self, *args: str, ok_codes=(0,)) -> subprocess.CompletedProcess:
        """Run ``nova-manage --config-file nova.conf ARGS``; its output on failure."""
        command = [self.env.program("nova-manage"), "--config-file", self.config_file,
                   *args]
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env=self.env.subprocess_env(),
                              cwd=self.workdir, timeout=MANAGE_TIMEOUT)
        if done.returncode not in ok_codes:
            raise NovaCommandError(f"nova-manage {' '.join(args)} exited with "
                                   f"{done.returncode}:\n{done.stdout[-6000:]}")
        return done

    def create(self, separate_runs: bool = False):
        """Nova's own schema and cell mappings, as a deployment guide makes them:
        ``nova-manage api_db sync``, ``cell_v2 map_cell0``, ``cell_v2 create_cell --name
        cell1``, ``db sync``. By default the four commands run in one process
        (``nova_side/create_deployment.py`` calls nova-manage's command classes);
        ``separate_runs`` runs the ``nova-manage`` program four times."""
        if separate_runs:
            self.manage("api_db", "sync")
            self.manage("cell_v2", "map_cell0", "--database_connection", self.cell0_url)
            self.manage("cell_v2", "create_cell", "--name", CELL_NAME,
                        "--database_connection", self.cell_url, "--transport-url", "fake://")
            self.manage("db", "sync")
            return self
        command = [self.env.python, CREATE_SCRIPT, "--config-file", self.config_file,
                   self.cell0_url, CELL_NAME, self.cell_url]
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env=self.env.subprocess_env(), cwd=self.workdir,
                              timeout=MANAGE_TIMEOUT)
        if done.returncode != 0:
            raise NovaCommandError(f"creating the databases with nova-manage's commands "
                                   f"failed ({done.returncode}):\n{done.stdout[-6000:]}")
        return self

    def archive_deleted_rows(self, *extra: str) -> str:
        """``nova-manage db archive_deleted_rows --all-cells --until-complete --verbose``
        (exit 1 means "rows were archived", 0 "nothing to archive"); its output."""
        done = self.manage("db", "archive_deleted_rows", "--all-cells", "--until-complete",
                           "--verbose", *extra, ok_codes=(0, 1))
        return done.stdout

    # -- reading the databases directly (checks in tests) ---------------------------------

    def query(self, database: str, sql: str, params=()) -> list[tuple]:
        """Rows of ``sql`` on ``database`` ("api", "cell0" or "cell1"), read directly (root on
        MariaDB); placeholders are ``?`` on both (``%s`` also on MariaDB). A statement that
        writes is committed (a test's own change of a row)."""
        if self.backend == "mariadb":
            names = dict(zip(("api", "cell0", CELL_NAME), self.database_names))
            return self.mariadb.execute(sql.replace("?", "%s"), params or None,
                                        db=names[database])
        conn = sqlite3.connect(self.database_paths[database])
        try:
            rows = conn.execute(sql, params).fetchall()
            conn.commit()
            return rows
        finally:
            conn.close()

    # -- the writer -----------------------------------------------------------------------

    def writer(self) -> "NovaWriter":
        return NovaWriter(self)


class NovaWriter:
    """One writer process (Nova's objects, side environment). Every op of
    ``nova_side/writer.py`` is a method: ``writer.build_server(user_id=..., ...)`` returns
    the op's result or raises :class:`NovaCommandError` with Nova's traceback."""

    def __init__(self, deployment: NovaDeployment):
        self.deployment = deployment
        self.log_path = os.path.join(deployment.workdir, "writer.log")
        self._lock = threading.Lock()
        self._heartbeats: list[tuple[threading.Event, threading.Thread]] = []
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [deployment.env.python, WRITER_SCRIPT, "--config-file", deployment.config_file],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True,
            env=deployment.env.subprocess_env(), cwd=deployment.workdir, bufsize=1)
        try:
            ready = self._read_reply("start")
            if ready != "ready":
                raise NovaCommandError(f"writer did not start: {ready!r}\n{self.log_tail()}")
        except BaseException:
            self.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __getattr__(self, op: str):
        if op.startswith("_"):
            raise AttributeError(op)
        return functools.partial(self.call, op)

    def call(self, op: str, **arguments):
        with self._lock:
            if self.process.poll() is not None:
                raise NovaCommandError(f"writer exited with {self.process.returncode}\n"
                                       f"{self.log_tail()}")
            self.process.stdin.write(json.dumps(dict(arguments, op=op)) + "\n")
            self.process.stdin.flush()
            return self._read_reply(op)

    def _read_reply(self, op: str):
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(10)
            raise NovaCommandError(f"writer exited ({self.process.returncode}) during "
                                   f"{op}:\n{self.log_tail()}")
        reply = json.loads(line)
        if not reply["ok"]:
            raise NovaCommandError(f"{op}: {reply['error']}\n{reply['traceback']}")
        return reply["result"]

    def start_heartbeats(self, hosts, interval: float = 10.0) -> threading.Event:
        """Report the compute services of ``hosts`` alive every ``interval`` seconds, as
        running nova-compute services do (Nova counts a service down after 60 s without
        a report). Set the returned event to stop; ``close()`` stops them too."""
        stop = threading.Event()

        def beat():
            while not stop.is_set() and self.process.poll() is None:
                for host in hosts:
                    try:
                        self.call("service_heartbeat", host=host)
                    except NovaCommandError:
                        if self.process.poll() is not None:
                            return
                        # As nova-compute's report_state: a failed report (SQLite's
                        # "database is locked" while a publisher writes) waits for the
                        # next interval; the service stays up unless reports keep failing.
                        continue
                stop.wait(interval)

        thread = threading.Thread(target=beat, name="nova-heartbeats", daemon=True)
        thread.start()
        self._heartbeats.append((stop, thread))
        return stop

    def stop_heartbeats(self, stop: threading.Event, timeout: float = 30.0):
        """Stop the reports that ``start_heartbeats`` returned ``stop`` for, and wait until
        none is in flight (a report after this would undo a test's ``service_down``)."""
        stop.set()
        for event, thread in self._heartbeats:
            if event is stop:
                thread.join(timeout)

    def log_tail(self, size: int = 6000) -> str:
        return log_tail(self.log_path, size)

    def close(self):
        for stop, thread in self._heartbeats:
            stop.set()
            thread.join(30)
        if self.process.poll() is None:
            try:
                self.process.stdin.close()
                self.process.wait(30)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        self.process.stdout.close()
        self._log.close()


def run_concurrently(*calls):
    """Call each function in its own thread; their results in order, or the first error.
    Nova's tools are separate processes, so deployments are made (and filled) side by side."""
    results = [None] * len(calls)
    errors = []

    def run(index, call):
        try:
            results[index] = call()
        except BaseException as exc:  # reported below, with the others
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n, call)) for n, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def create_concurrently(*deployments: NovaDeployment):
    """``create()`` several deployments at once."""
    return run_concurrently(*(d.create for d in deployments))


def nova_mariadb_fixture(mariadb_fixture_name: str = "mariadb", scope: str = "module",
                         prefix: str = "", name: str | None = None):
    """A fixture yielding a :class:`NovaDeployment` made by nova-manage on the MariaDB server
    of the fixture ``mariadb_fixture_name`` (same or wider scope)."""
    @pytest.fixture(scope=scope, name=name)
    def _nova_mariadb(request):
        mariadb = request.getfixturevalue(mariadb_fixture_name)
        with scratch_dir("nova-mariadb") as workdir:
            yield NovaDeployment.on_mariadb(mariadb, workdir, prefix=prefix).create()
    return _nova_mariadb


def nova_sqlite_fixture(scope: str = "module", name: str | None = None):
    """A fixture yielding a :class:`NovaDeployment` made by nova-manage on SQLite files."""
    @pytest.fixture(scope=scope, name=name)
    def _nova_sqlite():
        with scratch_dir("nova-sqlite") as workdir:
            yield NovaDeployment.on_sqlite(workdir).create()
    return _nova_sqlite
