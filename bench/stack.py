"""The system under test for one replica size: a cell database populated by the
simulator, its publisher, and the appliance (supervisor, forked workers, ingest,
admin listener) replicating it over nanomsg and serving it on a real socket.

Every process is started through ``bench.procs.Processes`` (own process group, stopped
on exit); every file lives under the stack's directory in the run's temporary root.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import time

from bench import client
from replica.store.connection import WAL_RESTART_BYTES
from bench.ports import free_port
from bench.procs import Processes, children_of, cmdline, wait_until

CELL = "c0"
FLAVOR_SOURCE = "flavors"              # the feed of Nova's API database, when started
READY_TIMEOUT_S = 60.0
LIVE_TIMEOUT_PER_SERVER_S = 0.002      # replication time allowed per server, on top of READY
SETTLE_TIMEOUT_S = 300.0                # the WAL of a first load copied back (1M: ~15 s)
IDS_LIMIT = 20_000                     # ids handed to wrk for random shows


def appliance_argv() -> list[str]:
    """The appliance's command line: the installed entry point next to this Python."""
    path = os.path.join(os.path.dirname(sys.executable), "appliance")
    return [path] if os.path.exists(path) else [sys.executable, "-m", "appliance"]


def populate_cell(path: str, servers: int, projects: int, seed: int, name: str = CELL,
                  log=print) -> dict:
    """A new cell database with ``servers`` servers, written by the simulator."""
    from replica.cell.outbox import init_cell_db
    from replica.cell.simulator import populate

    started = time.monotonic()
    init_cell_db(path, name)
    last = [0.0]

    def progress(done, total=None):
        now = time.monotonic()
        if now - last[0] >= 5:
            last[0] = now
            log(f"    populate {os.path.basename(path)}: {done:,}/{total or servers:,}")

    populate(path, servers, projects, seed=seed, progress=progress)
    return {"servers": servers, "seconds": time.monotonic() - started}


def cell_uuids(path: str, limit: int | None = None) -> list[str]:
    from replica.cell.connection import open_cell_reader

    conn = open_cell_reader(path)
    try:
        sql = "SELECT uuid FROM instances WHERE deleted = 0 ORDER BY id"
        rows = conn.execute(sql + (" LIMIT ?" if limit else ""), (limit,) if limit else ())
        return [u for (u,) in rows]
    finally:
        conn.close()


def cell_counts(path: str) -> dict:
    from replica.cell.connection import open_cell_reader

    conn = open_cell_reader(path)
    try:
        total, live = conn.execute("SELECT count(*), sum(deleted = 0) FROM instances").fetchone()
        return {"instances": total, "live": live or 0}
    finally:
        conn.close()


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))     # a JSON string is a TOML basic string


def write_ids(path: str, uuids: list[str]) -> str:
    with open(path, "w") as f:
        f.write("\n".join(uuids) + "\n")
    return path


class Stack:
    def __init__(self, root: str, servers: int, procs: Processes, projects: int = 20,
                 seed: int = 0, log=print, feed_key: bool = False):
        self.servers = servers
        self.projects = projects
        self.seed = seed
        self.procs = procs
        self.log = log
        self.dir = os.path.join(root, f"stack-{servers}")
        os.makedirs(self.dir, exist_ok=True)
        self.cell_db = os.path.join(self.dir, f"{CELL}.db")
        self.data_dir = os.path.join(self.dir, "data")
        self.replica_db = os.path.join(self.data_dir, "replica.db")
        self.config_path = os.path.join(self.dir, "appliance.toml")
        self.feed_url = f"tcp://127.0.0.1:{free_port()}"
        self.control_url = f"tcp://127.0.0.1:{free_port()}"
        self.port = free_port()
        self.admin_port = free_port()
        self.publisher = None
        self.appliance = None
        self.workers = None
        self.scheme = "http"
        self.settings: dict = {}
        self.timings: dict[str, float] = {}
        # Nova's API database (flavors, key pairs, quota limits): start_flavor_source()
        self.flavor_db = os.path.join(self.dir, f"{FLAVOR_SOURCE}.db")
        self.flavor_publisher = None
        self.flavor_urls: tuple[str, str] | None = None     # (feed, control)
        # a sealed feed and control: one key file for the publisher and the appliance
        self.key_file = os.path.join(self.dir, f"{CELL}.key") if feed_key else None
        if self.key_file and not os.path.exists(self.key_file):
            from replica.key_file import write_new_key_file
            write_new_key_file(self.key_file)

    def sibling(self, name: str) -> "Stack":
        """Another appliance replicating the same cell from the same publisher, with its
        own directory, data dir, ports and config (see ``start_appliance(settings=)``)."""
        other = copy.copy(self)
        other.dir = os.path.join(self.dir, name)
        os.makedirs(other.dir, exist_ok=True)
        other.data_dir = os.path.join(other.dir, "data")
        other.replica_db = os.path.join(other.data_dir, "replica.db")
        other.config_path = os.path.join(other.dir, "appliance.toml")
        other.port = free_port()
        other.admin_port = free_port()
        other.appliance = None
        other.workers = None
        other.scheme = "http"
        other.settings = {}
        other.timings = {}
        return other

    # -- set-up --------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.admin_port}"

    def populate(self) -> None:
        self.log(f"  populating a cell with {self.servers:,} servers")
        result = populate_cell(self.cell_db, self.servers, self.projects, self.seed, log=self.log)
        self.timings["populate_s"] = result["seconds"]

    def start_publisher(self) -> None:
        self.publisher = self.procs.start(
            "publisher", [*appliance_argv(), "cell", "--db", self.cell_db, "--name", CELL,
                          "--feed", self.feed_url, "--control", self.control_url]
            + (["--key-file", self.key_file] if self.key_file else []),
            log_path=os.path.join(self.dir, "publisher.log"))

    def start_flavor_source(self) -> None:
        """A flavor source beside the cell (Nova's API database: the simulator's flavors,
        the demo project's quota limits, the admin's key pairs) and its publisher; the
        appliance started next also replicates it."""
        from replica.cell import outbox, simulator
        if not os.path.exists(self.flavor_db):
            outbox.init_cell_db(self.flavor_db, FLAVOR_SOURCE, flavors=True)
            simulator.seed_flavors(self.flavor_db)
        self.flavor_urls = (f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}")
        self.flavor_publisher = self.procs.start(
            "publisher-flavors",
            [*appliance_argv(), "cell", "--db", self.flavor_db, "--name", FLAVOR_SOURCE,
             "--feed", self.flavor_urls[0], "--control", self.flavor_urls[1]]
            + (["--key-file", self.key_file] if self.key_file else []),
            log_path=os.path.join(self.dir, "publisher-flavors.log"))

    def stop_flavor_source(self) -> None:
        if self.flavor_publisher is not None:
            self.procs.stop(self.flavor_publisher)
            self.flavor_publisher = None
            self.flavor_urls = None

    def _write_config(self, workers: int) -> None:
        # The stack logs warnings only, unless its settings say otherwise.
        settings = {"log_level": "warning", **self.settings}
        extra = "".join(f"{name} = {toml_value(value)}\n" for name, value in settings.items())
        text = (f'listen_host = "127.0.0.1"\nlisten_port = {self.port}\n'
                f'admin_host = "127.0.0.1"\nadmin_port = {self.admin_port}\n'
                f'workers = {workers}\ndata_dir = "{self.data_dir}"\n'
                f'{extra}\n'
                f'[[cell]]\nname = "{CELL}"\nfeed = "{self.feed_url}"\n'
                f'control = "{self.control_url}"\n'
                + (f'key_file = "{self.key_file}"\n' if self.key_file else ""))
        if self.flavor_urls is not None:
            text += (f'\n[[cell]]\nname = "{FLAVOR_SOURCE}"\nkind = "flavors"\n'
                     f'feed = "{self.flavor_urls[0]}"\ncontrol = "{self.flavor_urls[1]}"\n'
                     + (f'key_file = "{self.key_file}"\n' if self.key_file else ""))
        with open(self.config_path, "w") as f:
            f.write(text)

    def start_appliance(self, workers: int, settings: dict | None = None) -> None:
        """Start (or restart with another worker count) and wait until it serves every
        server of the cell. ``settings``: more settings for the config file (kept for
        later restarts); with ``tls_cert_file`` the URLs are https."""
        if self.appliance is not None:
            self.stop_appliance()
        if settings is not None:
            self.settings = dict(settings)
            self.scheme = "https" if self.settings.get("tls_cert_file") else "http"
        self._write_config(workers)
        started = time.monotonic()
        self.appliance = self.procs.start(
            "appliance", [*appliance_argv(), "serve", "--config", self.config_path],
            log_path=os.path.join(self.dir, "appliance.log"),
            env={k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")})
        self.workers = workers
        self.wait_live()
        self.timings[f"start_w{workers}_s"] = time.monotonic() - started
        began = time.monotonic()
        self.wait_settled()
        self.timings[f"settle_w{workers}_s"] = time.monotonic() - began

    def stop_appliance(self) -> None:
        if self.appliance is not None:
            self.procs.stop(self.appliance)
            self.appliance = None

    # -- state ---------------------------------------------------------------------

    def status(self) -> dict:
        return client.get_json(f"{self.admin_url}/status", timeout=5)

    def cell_status(self) -> dict | None:
        for cell in self.status().get("cells", []):
            if cell.get("cell") == CELL:
                return cell
        return None

    def wait_live(self, timeout: float | None = None) -> dict:
        """Until the cell is live in the replica with as many servers as the cell holds and
        the API answers."""
        expected = cell_counts(self.cell_db)["instances"]
        timeout = timeout or READY_TIMEOUT_S + LIVE_TIMEOUT_PER_SERVER_S * expected

        def live():
            cell = self.cell_status()
            if self.flavor_urls is not None and not any(
                    c.get("cell") == FLAVOR_SOURCE and c.get("state") == "live"
                    for c in self.status().get("cells", [])):
                return None
            if cell and cell.get("state") == "live" and cell.get("servers") == expected:
                status, _h, _b = client.request(f"{self.base_url}/v2.1/", timeout=5)
                return cell if status == 200 else None
            return None

        return wait_until(live, timeout, f"cell {CELL} live with {expected} servers",
                          interval=0.1, proc=self.appliance)

    def wait_settled(self, timeout: float = SETTLE_TIMEOUT_S) -> None:
        """Until the replica's write-ahead log is copied back into its file. A first
        load writes the whole replica into the WAL (3 GB at 1,000,000 servers): reads
        made while a checkpoint copies it back are slower (the copy takes a core, and
        every page a reader reads is first looked up in the WAL's index), and the figures
        are of the replica at rest. ``appliance_ingest_wal_backlog_bytes`` shows it."""

        def settled():
            backlog = self.status().get("ingest", {}).get("wal_backlog_bytes")
            # at most what ingest's own checkpoints leave in passing
            return backlog is None or backlog <= WAL_RESTART_BYTES

        wait_until(settled, timeout, "the replica's WAL copied back", interval=0.2,
                   proc=self.appliance)

    def live_servers(self) -> int:
        return cell_counts(self.cell_db)["live"]

    def ids_file(self) -> str:
        """The ids wrk draws its shows from: live servers of the cell as it is now (a
        churn before, as the lag scenario's, deletes some), written anew on each call."""
        path = os.path.join(self.dir, "ids.txt")
        write_ids(path + ".new", cell_uuids(self.cell_db, IDS_LIMIT))
        os.replace(path + ".new", path)
        return path

    def processes(self) -> list[dict]:
        table_path = os.path.join(self.data_dir, "processes.json")
        try:
            with open(table_path) as f:
                return json.load(f).get("processes", [])
        except (OSError, ValueError):
            return []

    def worker_pids(self) -> list[int]:
        pids = [p["pid"] for p in self.processes() if p.get("role") == "worker"]
        if pids or self.appliance is None:
            return pids
        return [pid for pid in children_of(self.appliance.pid) if "worker" in cmdline(pid)]

    def replica_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal"):
            try:
                total += os.path.getsize(self.replica_db + suffix)
            except OSError:
                pass
        return total
