"""A private MariaDB server for tests: Debian's ``mariadbd`` on a temporary datadir, a free
loopback port and its own socket file, with the row-based binlog and GTIDs a binlog reader
needs (``log_bin``, ``binlog_format=ROW``, ``binlog_row_image=FULL``,
``binlog_row_metadata=FULL``, ``server_id``, ``gtid_strict_mode``).

Root connects without a password over the socket or TCP (the datadir is made with
``--auth-root-authentication-method=normal``); grants are real (no ``--skip-grant-tables``).

    from tests.realnova.mariadb import mariadb_fixture
    mariadb = mariadb_fixture(scope="module")          # in a test module or conftest

    def test_x(mariadb):
        mariadb.create_database("nova_cell1")
        mariadb.create_replica_user("replica", "secret", ["nova_cell1"])
        url = mariadb.url("nova_cell1", "replica", "secret")
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.parse

import pytest
import pymysql

from tests.conftest import free_port
from tests.realnova.processes import stop_process

MARIADBD_CANDIDATES = ("/usr/sbin/mariadbd", "mariadbd")
INSTALL_DB_CANDIDATES = ("/usr/bin/mariadb-install-db", "mariadb-install-db")
START_TIMEOUT = 60.0        # seconds until the server must accept connections
STOP_TIMEOUT = 60.0         # seconds for a clean shutdown before SIGKILL
PR_SET_PDEATHSIG = 1
RAM_FS = "/dev/shm"
RAM_FS_MIN_FREE = 2 << 30    # bytes free on RAM_FS to put a server's data there


class MariaDBError(RuntimeError):
    """The server could not be set up, started or stopped."""


def _find_program(candidates) -> str:
    for candidate in candidates:
        path = candidate if os.path.isabs(candidate) else shutil.which(candidate)
        if path and os.access(path, os.X_OK):
            return path
    raise MariaDBError(f"{candidates[-1]} not found: install Debian's mariadb-server "
                       f"(build/bootstrap.sh does)")


def _die_with_parent():
    """In the child before exec: the server gets SIGKILL if the test process dies, so a
    crashed or killed test run leaves no server behind."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _ram_fs_has_room() -> bool:
    """A writable /dev/shm with room for a server (a Nova deployment takes ~150 MB; a
    container's default /dev/shm of 64 MB does not fit, and then the disk is used)."""
    if not (os.path.isdir(RAM_FS) and os.access(RAM_FS, os.W_OK)):
        return False
    stats = os.statvfs(RAM_FS)
    return stats.f_bavail * stats.f_frsize >= RAM_FS_MIN_FREE


def child_setup():
    """``preexec_fn`` for a server process: die with the test process. Linux ties the
    parent-death signal to the *thread* that forks, so a child started from another thread
    (fixtures built side by side) must not have it, or it dies when that thread ends."""
    if threading.current_thread() is threading.main_thread():
        return _die_with_parent
    return None


class MariaDB:
    """One private ``mariadbd``. ``start()`` makes the datadir on first use; ``stop()``,
    ``kill()`` and ``restart()`` keep the datadir, the port and the binlog."""

    def __init__(self, base_dir: str, server_id: int = 1, port: int | None = None,
                 in_memory: bool = True):
        """``base_dir`` holds the socket, pid file and logs. The datadir, binlog and
        temporary files go to a private directory in ``/dev/shm`` when ``in_memory`` (and
        it has room): the server still fsyncs, but a RAM file system makes that free, and
        Nova's migrations run three times faster; ``remove()`` deletes it."""
        self.base_dir = os.path.abspath(base_dir)
        self.storage_dir = self.base_dir
        if in_memory and _ram_fs_has_room():
            self.storage_dir = tempfile.mkdtemp(prefix="realnova-mariadb-", dir=RAM_FS)
        self.datadir = os.path.join(self.storage_dir, "data")
        self.socket = os.path.join(self.base_dir, "mariadb.sock")
        self.pid_file = os.path.join(self.base_dir, "mariadb.pid")
        self.error_log = os.path.join(self.base_dir, "error.log")
        self.binlog_basename = os.path.join(self.storage_dir, "binlog", "mariadb-bin")
        self.tmpdir = os.path.join(self.storage_dir, "tmp")
        self.server_id = server_id
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None

    # -- life cycle ---------------------------------------------------------------------

    def install(self):
        """Make the system tables in an empty datadir (once)."""
        if os.path.isdir(os.path.join(self.datadir, "mysql")):
            return
        os.makedirs(self.datadir, exist_ok=True)
        os.makedirs(os.path.dirname(self.binlog_basename), exist_ok=True)
        os.makedirs(self.tmpdir, exist_ok=True)
        command = [_find_program(INSTALL_DB_CANDIDATES), "--no-defaults",
                   "--auth-root-authentication-method=normal", "--skip-test-db",
                   f"--datadir={self.datadir}", "--user=root", f"--tmpdir={self.tmpdir}",
                   "--innodb-log-file-size=16M"]
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=START_TIMEOUT)
        if done.returncode != 0:
            raise MariaDBError(f"mariadb-install-db failed ({done.returncode}):\n{done.stdout}")

    def server_command(self) -> list[str]:
        return [
            _find_program(MARIADBD_CANDIDATES), "--no-defaults", "--user=root",
            f"--datadir={self.datadir}", f"--socket={self.socket}",
            f"--pid-file={self.pid_file}", f"--log-error={self.error_log}",
            f"--tmpdir={self.tmpdir}",
            f"--bind-address={self.host}", f"--port={self.port}",
            f"--server-id={self.server_id}",
            f"--log-bin={self.binlog_basename}", "--binlog-format=ROW",
            "--binlog-row-image=FULL", "--binlog-row-metadata=FULL",
            "--gtid-strict-mode=ON", "--log-slave-updates=ON",
            "--character-set-server=utf8mb4", "--collation-server=utf8mb4_general_ci",
            # Test speed: survives a server crash (not a power cut).
            "--innodb-flush-log-at-trx-commit=2", "--sync-binlog=0",
            "--innodb-buffer-pool-size=64M", "--innodb-log-file-size=16M",
            "--max-connections=500", "--skip-name-resolve",
        ]

    def start(self):
        if self.running:
            return
        self.install()
        with open(os.path.join(self.base_dir, "stdout.log"), "ab") as out:
            self.process = subprocess.Popen(self.server_command(), stdout=out,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            preexec_fn=child_setup())
        deadline = time.monotonic() + START_TIMEOUT
        last_error = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise MariaDBError(f"mariadbd exited with {self.process.returncode} at start:\n"
                                   + self.error_log_tail())
            try:
                self.connect().close()
                return
            except pymysql.err.OperationalError as exc:
                last_error = exc
            time.sleep(0.05)
        self.kill()
        raise MariaDBError(f"mariadbd did not accept connections within {START_TIMEOUT}s "
                           f"({last_error!r}):\n{self.error_log_tail()}")

    def stop(self):
        """A clean shutdown (SIGTERM, then SIGKILL after a grace period)."""
        if self.process is None:
            return
        stop_process(self.process, signal.SIGTERM, STOP_TIMEOUT)
        self.process = None

    def kill(self):
        """SIGKILL: the server dies as in a crash; ``start()`` recovers the datadir."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.process = None

    def restart(self):
        self.stop()
        self.start()

    def remove(self):
        """Stop the server and delete its data (the in-memory directory too)."""
        self.stop()
        if self.storage_dir != self.base_dir:
            shutil.rmtree(self.storage_dir, ignore_errors=True)
        else:
            shutil.rmtree(self.datadir, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def error_log_tail(self, lines: int = 30) -> str:
        try:
            with open(self.error_log, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return "(no error log)"

    # -- clients ------------------------------------------------------------------------

    def url(self, db: str = "", user: str = "root", password: str = "",
            driver: str = "mysql+pymysql") -> str:
        """An SQLAlchemy URL over TCP, e.g. ``mysql+pymysql://nova:pw@127.0.0.1:3306/nova_api``
        (``charset=utf8mb4`` as Nova's deployment guides write it)."""
        credentials = urllib.parse.quote(user, safe="")
        if password:
            credentials += ":" + urllib.parse.quote(password, safe="")
        return f"{driver}://{credentials}@{self.host}:{self.port}/{db}?charset=utf8mb4"

    def connect(self, db: str | None = None, user: str = "root", password: str = "",
                **kwargs) -> pymysql.connections.Connection:
        """A PyMySQL connection; root goes through the socket file, others through TCP."""
        if user == "root" and not password:
            return pymysql.connect(unix_socket=self.socket, user=user, database=db,
                                   charset="utf8mb4", autocommit=True, **kwargs)
        return pymysql.connect(host=self.host, port=self.port, user=user, password=password,
                               database=db, charset="utf8mb4", autocommit=True, **kwargs)

    def execute(self, sql: str, params=None, db: str | None = None) -> list[tuple]:
        """Run one statement as root (autocommit); the rows it returns."""
        with contextlib.closing(self.connect(db)) as conn, conn.cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall())

    def scalar(self, sql: str, params=None, db: str | None = None):
        rows = self.execute(sql, params, db)
        return rows[0][0] if rows else None

    def create_database(self, name: str):
        self.execute(f"CREATE DATABASE IF NOT EXISTS {_ident(name)} "
                     f"CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci")

    def drop_database(self, name: str):
        self.execute(f"DROP DATABASE IF EXISTS {_ident(name)}")

    def create_user(self, name: str, password: str, databases=(), privileges="ALL PRIVILEGES"):
        """A user that logs in from anywhere with ``privileges`` on each of ``databases``."""
        self.execute("CREATE USER IF NOT EXISTS %s@'%%' IDENTIFIED BY %s", (name, password))
        for db in databases:
            self.execute(f"GRANT {privileges} ON {_ident(db)}.* TO %s@'%%'", (name,))

    def create_replica_user(self, name: str, password: str, databases=()):
        """A binlog reader's user: ``REPLICATION SLAVE, REPLICATION CLIENT`` on ``*.*`` and
        ``SELECT`` on each of ``databases``, nothing else."""
        self.execute("CREATE USER IF NOT EXISTS %s@'%%' IDENTIFIED BY %s", (name, password))
        self.execute("GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO %s@'%%'", (name,))
        for db in databases:
            self.execute(f"GRANT SELECT ON {_ident(db)}.* TO %s@'%%'", (name,))

    def binlog_files(self) -> list[str]:
        """The binary log files the server has, oldest first."""
        return [row[0] for row in self.execute("SHOW BINARY LOGS")]

    def rotate_binlog(self) -> str:
        """Start a new binary log file (``FLUSH BINARY LOGS``); its name."""
        self.execute("FLUSH BINARY LOGS")
        return self.binlog_files()[-1]

    def purge_binlogs(self):
        """Rotate, then purge every binary log file but the new one: a reader that was
        behind can no longer resume from its position."""
        current = self.rotate_binlog()
        # A file stays until InnoDB's binlog checkpoint has moved past it (crash recovery
        # needs it): purge again until it is gone.
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            self.execute("PURGE BINARY LOGS TO %s", (current,))
            if self.binlog_files() == [current]:
                return
            if time.monotonic() > deadline:
                raise MariaDBError(f"binary logs before {current} were not purged: "
                                   f"{self.binlog_files()}")
            time.sleep(0.05)

    def gtid_binlog_pos(self) -> str:
        return self.scalar("SELECT @@gtid_binlog_pos")

    def server_uid(self) -> str:
        """MariaDB's identity of this server's datadir (``@@server_uid``)."""
        return self.scalar("SELECT @@server_uid")


def _ident(name: str) -> str:
    if not name or "`" in name:
        raise ValueError(f"bad identifier {name!r}")
    return f"`{name}`"


@contextlib.contextmanager
def scratch_dir(prefix: str):
    """A private temporary directory, removed at exit. Used instead of pytest's tmp_path for
    long-lived fixtures: pytest removes old base directories of *other* runs by the same
    user when a session starts, which on a shared machine pulls a running server's files
    from under it."""
    path = tempfile.mkdtemp(prefix=f"realnova-{prefix}-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def running_mariadb(base_dir: str | None = None, server_id: int = 1):
    """A started server, stopped and removed at exit (its temporary directory too when
    ``base_dir`` is not given)."""
    owned = base_dir is None
    if owned:
        base_dir = tempfile.mkdtemp(prefix="mariadb-")
    server = MariaDB(base_dir, server_id=server_id)
    try:
        server.start()
        yield server
    finally:
        server.remove()
        if owned:
            shutil.rmtree(base_dir, ignore_errors=True)


def mariadb_fixture(scope: str = "module", server_id: int = 1, name: str | None = None):
    """A pytest fixture (``scope`` module or session) yielding a started :class:`MariaDB`,
    stopped at teardown. Assign it to a name in a test module or conftest::

        mariadb = mariadb_fixture(scope="session")
    """
    @pytest.fixture(scope=scope, name=name)
    def _mariadb():
        with scratch_dir("mariadb") as base_dir, running_mariadb(base_dir, server_id) as server:
            yield server
    return _mariadb
