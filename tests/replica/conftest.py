"""Helpers of the appliance-side replication tests: valid entities, a stand-in render
for unit tests of ingest logic, publishers and ingest as real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid as uuidlib

import apsw
import pytest

from bench.relay import Relay
from replica import feed
from replica.store.connection import open_writer

from tests.conftest import ROOT, ipc_listening, wait_for

PYTHON = sys.executable


# ---------------------------------------------------------------------------
# Entities and a stand-in render (unit tests of logic only)
# ---------------------------------------------------------------------------

def make_server(key: str | None = None, **over) -> dict:
    """A valid server entity (every field of feed.SERVER_FIELDS)."""
    entity = {}
    for name, types in feed.SERVER_FIELDS.items():
        if type(None) in types:
            entity[name] = None
        else:
            entity[name] = {str: name, bool: False, int: 0, dict: {}, list: []}[types[0]]
    entity.update(uuid=key or str(uuidlib.uuid4()), project_id="p1", user_id="u1",
                  created_at="2026-12-01T07:00:00.000000", instance_name="instance-00000001",
                  flavor={"flavorid": "1", "name": "m1.tiny", "memory_mb": 512, "vcpus": 1,
                          "root_gb": 1, "ephemeral_gb": 0, "swap": 0, "extra_specs": {}})
    entity.update(over)
    feed.validate_entity(feed.KIND_SERVER, entity["uuid"], entity)
    return entity


def make_flavor(flavorid: str = "1", **over) -> dict:
    entity = {"flavorid": flavorid, "name": f"f{flavorid}", "memory_mb": 512, "vcpus": 1,
              "root_gb": 1, "ephemeral_gb": 0, "swap": 0, "rxtx_factor": 1.0,
              "vcpu_weight": None, "disabled": False, "is_public": True, "description": None,
              "extra_specs": {}, "projects": [], "created_at": "2026-12-01T07:00:00.000000"}
    entity.update(over)
    feed.validate_entity(feed.KIND_FLAVOR, flavorid, entity)
    return entity


class StandInRender:
    """Rows with the replica's real columns, filled from the entity's key fields only:
    enough for the writer and the ingest state machine, not for the API."""

    def __init__(self, replica_path: str):
        conn = open_writer(replica_path)
        self.server_info = conn.execute("PRAGMA table_info(servers)").fetchall()
        self.flavor_info = conn.execute("PRAGMA table_info(flavors)").fetchall()
        conn.close()
        self.SERVER_COLUMNS = tuple(r[1] for r in self.server_info)
        self.FLAVOR_COLUMNS = tuple(r[1] for r in self.flavor_info)
        self.refuse: set[str] = set()   # keys whose render raises (a render bug stand-in)
        self.rendered: list[tuple[str, int]] = []    # (key, seq) of every server_row call

    @staticmethod
    def _row(info, known: dict) -> tuple:
        out = []
        for _cid, name, ctype, notnull, _default, _pk in info:
            if name in known:
                out.append(known[name])
            elif not notnull:
                out.append(None)
            else:
                out.append(b"{}" if ctype == "BLOB" else 0 if ctype == "INTEGER" else "")
        return tuple(out)

    def server_row(self, cell: str, seq: int, entity: dict, entity_hash=None) -> tuple:
        if entity["uuid"] in self.refuse:
            raise ValueError("stand-in render refuses this entity")
        self.rendered.append((entity["uuid"], seq))
        return self._row(self.server_info, {
            "uuid": entity["uuid"], "cell": cell, "seq": seq, "project_id": entity["project_id"],
            "user_id": entity["user_id"], "deleted": int(entity["deleted"]),
            "display_name": entity["display_name"], "created_at": entity["created_at"],
            "entity_hash": feed.entity_hash(entity), "bucket": feed.bucket_of(entity["uuid"])})

    def flavor_row(self, source: str, seq: int, entity: dict, entity_hash=None) -> tuple:
        return self._row(self.flavor_info, {
            "flavorid": entity["flavorid"], "source": source, "seq": seq, "name": entity["name"],
            "created_at": entity["created_at"], "entity_hash": feed.entity_hash(entity),
            "bucket": feed.bucket_of(entity["flavorid"])})


def live_ingest(replica_path: str, cells: tuple[str, ...] = ("c1",)):
    """An Ingest (not started) of cells (one, "c1", unless told) each already live at
    epoch "E", seq 0, on ``replica_path``: for tests that drive accept / commit / the
    checkpointer by hand."""
    from replica.ingest import CellFeed, Ingest, IngestConfig
    from replica.position import Position
    from replica.states import CellState
    config = IngestConfig(replica_path, [CellFeed(cell, f"ipc:///nonexistent/{cell}.f",
                                                  f"ipc:///nonexistent/{cell}.c")
                                         for cell in cells],
                          "ipc:///nonexistent/i")
    ing = Ingest(config, renderer=StandInRender(replica_path))
    for cell in cells:
        link = ing.links[cell]
        link.position = Position(cell, "E", 0)
        link.set_state(CellState.CATCHING_UP)
        link.set_state(CellState.LIVE)
    return ing


@pytest.fixture
def replica_path(tmp_path):
    return str(tmp_path / "replica.db")


# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------

class Proc:
    """A child process started by a test; ``stop()`` always reaps it."""

    def __init__(self, argv: list[str], log_path: str):
        self.argv = argv
        self.log_path = log_path
        self.log = open(log_path, "ab")
        self.popen = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                      cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill9(self) -> None:
        if self.alive():
            os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)

    def stop(self, timeout: float = 10.0) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        self.log.close()

    def output(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")


@pytest.fixture
def procs():
    """Start processes with ``procs.start(argv, name)``; all are stopped at the end."""
    started: list[Proc] = []

    class Starter:
        def start(self, argv: list[str], log_path: str) -> Proc:
            proc = Proc(argv, log_path)
            started.append(proc)
            return proc

    yield Starter()
    for proc in reversed(started):
        proc.stop()


def read_rows(replica: str, sql: str, args=()) -> list[tuple]:
    conn = apsw.Connection(replica, flags=apsw.SQLITE_OPEN_READONLY)
    try:
        conn.set_busy_timeout(2000)
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def built_entities(db: str, kind: str) -> dict[str, dict]:
    """``kind``'s entities as the cell side builds them from the database ``db`` now."""
    from replica.cell import connection as cell_connection
    from replica.cell import entity
    conn = cell_connection.open_cell_reader(db)
    try:
        return {key: e for _kind, key, e in entity.iter_entities(conn, [kind], page=2)}
    finally:
        conn.close()


def replica_holds_source(replica: str, source, kind: str) -> bool:
    """The replica's rows of ``kind`` owned by ``source`` (a cell or flavor source with
    ``db`` and ``name``) are the rows a fresh build and render of its database gives,
    the seq aside."""
    from replica import render
    from replica.kinds import KINDS
    declared = KINDS[kind]
    columns = getattr(render, declared.render_columns)
    row_of = getattr(render, declared.render_row)
    built = built_entities(source.db, kind)
    key_at, seq_at = columns.index(declared.key_column), columns.index("seq")
    stored = {row[key_at]: list(row) for row in read_rows(
        replica, f"SELECT {', '.join(columns)} FROM {declared.table} "
                 f"WHERE {declared.owner_column} = ?", (source.name,))}
    if set(stored) != set(built):
        return False
    for key, ent in built.items():
        fresh = list(row_of(source.name, 0, ent))
        fresh[seq_at] = stored[key][seq_at] = None
        if stored[key] != fresh:
            return False
    return True


# ---------------------------------------------------------------------------
# Cells (database + publisher process), ingest (process), convergence checks
# ---------------------------------------------------------------------------

class Cell:
    """One cell: its database in tmp_path and its publisher process."""

    def __init__(self, directory, name: str, procs, retention_events: int = 100_000,
                 flavors: bool = False, key_file: str | None = None,
                 publisher_args: tuple = ()):
        self.dir = directory
        self.key_file = key_file        # the publisher's; None: unauthenticated
        self.publisher_args = list(publisher_args)
        self.name = name
        self.procs = procs
        self.db = str(directory / f"{name}.db")
        self.feed_url = f"ipc://{directory}/{name}.feed"
        self.control_url = f"ipc://{directory}/{name}.ctl"
        self.retention_events = retention_events
        self.publisher: Proc | None = None
        from replica.cell.outbox import init_cell_db
        self.epoch = init_cell_db(self.db, name, flavors=flavors)

    def start(self) -> Proc:
        self.publisher = self.procs.start(
            [PYTHON, "-m", "replica.cell.publisher", "--db", self.db, "--name", self.name,
             "--feed", self.feed_url, "--control", self.control_url, "--heartbeat", "0.2",
             "--retention-events", str(self.retention_events)]
            + (["--key-file", self.key_file] if self.key_file else []) + self.publisher_args,
            str(self.dir / f"{self.name}.publisher.log"))
        wait_for(lambda: ipc_listening(self.control_url), 30,
                 what=f"publisher {self.name} control socket")
        return self.publisher

    def stop(self) -> None:
        if self.publisher is not None:
            self.publisher.stop()
            self.publisher = None

    def head(self) -> int:
        from replica.cell import connection, outbox
        conn = connection.open_cell_reader(self.db)
        try:
            return outbox.outbox_head(conn)
        finally:
            conn.close()

    def populate(self, servers: int, projects: int = 4, seed: int = 0) -> None:
        from replica.cell.simulator import populate
        populate(self.db, servers, projects, seed=seed)

    def churn(self, ops: int, seed: int = 1, rate: float = 0, servers: int = 200,
              stop=None) -> dict:
        from replica.cell.simulator import SimulatorConfig, run_simulator
        return run_simulator(SimulatorConfig(self.db, rate or 1_000_000, servers, 4, ops=ops,
                                             seed=seed), stop=stop)

    def compute_nodes(self) -> int:
        """How many live compute nodes (hypervisor entities) the cell has."""
        from replica.cell import connection
        conn = connection.open_cell_reader(self.db)
        try:
            return conn.execute("SELECT count(*) FROM compute_nodes WHERE deleted = 0"
                                ).fetchone()[0]
        finally:
            conn.close()

    def entities(self) -> dict[str, dict]:
        """Every live server entity of the cell, built fresh from its tables."""
        from replica.cell import connection, entity
        conn = connection.open_cell_reader(self.db)
        try:
            conn.execute("BEGIN")
            out = {key: ent for _kind, key, ent in entity.iter_entities(conn, ["server"])}
            conn.execute("ROLLBACK")
            return out
        finally:
            conn.close()

    def services(self) -> int:
        """The cell's live services (entities of its feed beside its servers)."""
        from replica.cell import connection
        conn = connection.open_cell_reader(self.db)
        try:
            return conn.execute("SELECT count(*) FROM services WHERE deleted = 0"
                                ).fetchone()[0]
        finally:
            conn.close()

    def feed(self, key_file: str | None = None):
        """Ingest's view of this cell (with ``key_file``: sealed)."""
        from replica.ingest import CellFeed
        return CellFeed(self.name, self.feed_url, self.control_url, key_file)


class IngestProc:
    """Ingest as a real subprocess, with its client."""

    def __init__(self, directory, procs, replica: str, feeds: list, **options):
        self.dir = directory
        self.procs = procs
        self.replica = replica
        self.feeds = feeds
        self.options = {"stale-after": 2.0, **options}
        self.control_url = f"ipc://{directory}/ingest.ctl"
        self.proc: Proc | None = None
        from replica.ingest_control import IngestClient
        self.client = IngestClient(self.control_url, timeout=5.0)

    def start(self) -> Proc:
        argv = [PYTHON, "-m", "replica.ingest", "--replica", self.replica,
                "--control", self.control_url]
        for f in self.feeds:
            argv += ["--cell", f"{f.name}={f.feed_url},{f.control_url}"
                     + (f",{f.key_file}" if f.key_file else "")]
        for name, value in self.options.items():
            argv += [f"--{name}", str(value)]
        self.proc = self.procs.start(argv, str(self.dir / "ingest.log"))
        wait_for(self.status, 15, what="ingest control socket")
        return self.proc

    def status(self) -> dict:
        return self.client.status()

    def cell(self, name: str) -> dict:
        return next(c for c in self.status()["cells"] if c["cell"] == name)

    def wait_caught_up(self, cells: list, timeout: float = 60.0) -> dict:
        heads = {c.name: c.head() for c in cells}

        def caught_up():
            status = {c["cell"]: c for c in self.status()["cells"]}
            return all(status[n]["state"] == "live" and status[n]["seq"] == heads[n]
                       for n in heads) and status

        return wait_for(caught_up, timeout, interval=0.1,
                        what=f"ingest caught up with {heads}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None


def replica_digest(replica: str, cell: str) -> list[list[int]]:
    buckets = [[0, 0] for _ in range(feed.DIGEST_BUCKETS)]
    for bucket, count, total in read_rows(
            replica, "SELECT bucket, count(*), sum(entity_hash) FROM servers WHERE cell = ? "
                     "GROUP BY bucket", (cell,)):
        buckets[bucket] = [count, total]
    return buckets


def cell_digest(entities: dict[str, dict]) -> list[list[int]]:
    buckets = [[0, 0] for _ in range(feed.DIGEST_BUCKETS)]
    for key, ent in entities.items():
        b = buckets[feed.bucket_of(key)]
        b[0] += 1
        b[1] += feed.entity_hash(ent)
    return buckets


def assert_converged(replica: str, cell: Cell, rows: bool = True) -> int:
    """The replica holds exactly the cell's servers, each row equal to a fresh render
    (every column but the seq of the event that wrote it) and the digests equal. With
    ``rows=False`` only the sets of keys are compared (cheap for big cells). Returns the
    server count."""
    from replica import render
    if not rows:
        conn = apsw.Connection(cell.db, flags=apsw.SQLITE_OPEN_READONLY)
        try:
            keys = {k for (k,) in conn.execute("SELECT uuid FROM instances")}
        finally:
            conn.close()
        ours = {k for (k,) in read_rows(replica, "SELECT uuid FROM servers WHERE cell = ?",
                                        (cell.name,))}
        assert ours == keys
        return len(keys)
    entities = cell.entities()
    columns = render.SERVER_COLUMNS
    seq_at = columns.index("seq")
    stored = {row[0]: row for row in read_rows(
        replica, f"SELECT {', '.join(columns)} FROM servers WHERE cell = ?", (cell.name,))}
    assert columns[0] == "uuid"
    assert set(stored) - set(entities) == set(), "rows the cell does not have"
    assert set(entities) - set(stored) == set(), "servers missing from the replica"
    assert replica_digest(replica, cell.name) == cell_digest(entities)
    for key, ent in entities.items():
        fresh = list(render.server_row(cell.name, 0, ent))
        row = list(stored[key])
        fresh[seq_at] = row[seq_at] = None
        assert [bytes(v) if isinstance(v, memoryview) else v for v in row] == fresh, key
    return len(entities)


def assert_positions_consistent(replica: str) -> dict:
    """No row claims a seq beyond its cell's committed position."""
    positions = dict(read_rows(replica, "SELECT cell, seq FROM positions"))
    for cell, max_seq in read_rows(replica, "SELECT cell, max(seq) FROM servers GROUP BY cell"):
        assert max_seq <= positions[cell], (cell, max_seq, positions[cell])
    return positions


@pytest.fixture
def make_cell(tmp_path, procs):
    def make(name: str, **kw) -> Cell:
        return Cell(tmp_path, name, procs, **kw)
    return make


@pytest.fixture
def make_ingest(tmp_path, procs, replica_path):
    made = []

    def make(feeds: list, **options) -> IngestProc:
        ing = IngestProc(tmp_path, procs, replica_path, feeds, **options)
        made.append(ing)
        return ing

    yield make
    for ing in made:
        ing.stop()
        ing.client.close()


@pytest.fixture
def relays():
    made: list[Relay] = []

    def make(source_url: str, url: str, drop: float = 0.0) -> Relay:
        relay = Relay(source_url, url, drop)
        made.append(relay)
        return relay

    yield make
    for relay in made:
        relay.close()
