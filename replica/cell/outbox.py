"""The outbox: triggers on the normalized tables append ``(kind, key)`` to
``replica_outbox`` in the same transaction as the change.

Why this gives the feed its guarantees:

- ``seq`` is an ``AUTOINCREMENT`` rowid. SQLite runs one write transaction at a
  time and rolls the sequence back with the transaction, so committed seqs are
  gapless and increase in commit order; ``AUTOINCREMENT`` never reuses a seq even
  after pruning has emptied the table, so the head survives pruning.
- A reader never sees a hole: a transaction's outbox rows become visible exactly
  when its data does.
- The epoch is a random id written once, when the outbox is installed; a rebuilt
  database gets a new one.

Fan-out triggers: a ``services`` change that matters for host_status enqueues every
live instance on that host (service heartbeats, which only bump ``report_count`` /
``updated_at``, enqueue nothing); a security group change enqueues its instances; a
server group change enqueues its members; a flavor extra spec / project change
enqueues its flavor. Every trigger inserts through ``SELECT ... WHERE`` so a row
without a key (NULL instance_uuid, a flavor already gone) enqueues nothing instead
of failing the cell's own transaction.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid as uuidlib

import apsw

from replica.cell import connection, schema

OUTBOX = "replica_outbox"
META = "replica_meta"
PRUNE_CHUNK = 50_000           # rows deleted per prune call: bounds the write lock

OUTBOX_DDL = (
    f"""
    CREATE TABLE IF NOT EXISTS {OUTBOX} (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        ts REAL NOT NULL DEFAULT (unixepoch('subsec'))
    )""",
    # last_changed_seq per key for drift checks
    f"CREATE INDEX IF NOT EXISTS {OUTBOX}_key_idx ON {OUTBOX} (kind, key)",
    f"CREATE TABLE IF NOT EXISTS {META} (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
)

# Tables whose rows belong to one instance, and the column naming it.
INSTANCE_CHILDREN = (
    ("instance_extra", "instance_uuid"),
    ("instance_info_caches", "instance_uuid"),
    ("instance_metadata", "instance_uuid"),
    ("instance_system_metadata", "instance_uuid"),
    ("block_device_mapping", "instance_uuid"),
    ("security_group_instance_association", "instance_uuid"),
    ("instance_faults", "instance_uuid"),
    ("tags", "resource_id"),
    ("instance_group_member", "instance_uuid"),
    ("request_specs", "instance_uuid"),
)

# Services columns that change host_status (see entity.host_status).
SERVICE_COLUMNS = ("host", '"binary"', "disabled", "forced_down", "deleted")


def _enqueue(kind: str, key_expr: str) -> str:
    return (f"INSERT INTO {OUTBOX} (kind, key) SELECT '{kind}', {key_expr} "
            f"WHERE {key_expr} IS NOT NULL;")


def _keyed_triggers(table: str, column: str, kind: str) -> list[str]:
    """Insert / update / delete of a row enqueues the key the row names."""
    name = f"{OUTBOX}_{table}"
    return [
        f"CREATE TRIGGER IF NOT EXISTS {name}_ins AFTER INSERT ON {table} BEGIN "
        f"{_enqueue(kind, f'NEW.{column}')} END",
        f"CREATE TRIGGER IF NOT EXISTS {name}_upd AFTER UPDATE ON {table} BEGIN "
        f"{_enqueue(kind, f'NEW.{column}')} "
        f"INSERT INTO {OUTBOX} (kind, key) SELECT '{kind}', OLD.{column} "
        f"WHERE OLD.{column} IS NOT NULL AND OLD.{column} IS NOT NEW.{column}; END",
        f"CREATE TRIGGER IF NOT EXISTS {name}_del AFTER DELETE ON {table} BEGIN "
        f"{_enqueue(kind, f'OLD.{column}')} END",
    ]


def _host_instances(host_expr: str) -> str:
    return (f"INSERT INTO {OUTBOX} (kind, key) SELECT 'server', uuid FROM instances "
            f"WHERE host = {host_expr} AND deleted = 0 ORDER BY id;")


def _service_triggers() -> list[str]:
    name = f"{OUTBOX}_services"
    changed = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in SERVICE_COLUMNS)
    compute = "(OLD.\"binary\" = 'nova-compute' OR NEW.\"binary\" = 'nova-compute')"
    return [
        f"CREATE TRIGGER IF NOT EXISTS {name}_ins AFTER INSERT ON services "
        f"WHEN NEW.\"binary\" = 'nova-compute' BEGIN {_host_instances('NEW.host')} END",
        f"CREATE TRIGGER IF NOT EXISTS {name}_upd AFTER UPDATE OF "
        f"{', '.join(SERVICE_COLUMNS)} ON services WHEN {compute} AND ({changed}) BEGIN "
        f"{_host_instances('NEW.host')} "
        f"INSERT INTO {OUTBOX} (kind, key) SELECT 'server', uuid FROM instances "
        f"WHERE host = OLD.host AND OLD.host IS NOT NEW.host AND deleted = 0 ORDER BY id; END",
        f"CREATE TRIGGER IF NOT EXISTS {name}_del AFTER DELETE ON services "
        f"WHEN OLD.\"binary\" = 'nova-compute' BEGIN {_host_instances('OLD.host')} END",
    ]


def _fanout_triggers(table: str, columns: str, members: str, fk: str, live: str) -> list[str]:
    """A change to a group-like row enqueues every instance associated with it."""
    name = f"{OUTBOX}_{table}"

    def members_of(ref: str) -> str:
        return (f"INSERT INTO {OUTBOX} (kind, key) SELECT 'server', instance_uuid "
                f"FROM {members} WHERE {fk} = {ref}.id AND instance_uuid IS NOT NULL{live} "
                "ORDER BY id;")

    return [
        f"CREATE TRIGGER IF NOT EXISTS {name}_upd AFTER UPDATE OF {columns} ON {table} "
        f"BEGIN {members_of('NEW')} END",
        f"CREATE TRIGGER IF NOT EXISTS {name}_del AFTER DELETE ON {table} "
        f"BEGIN {members_of('OLD')} END",
    ]


def _flavor_triggers() -> list[str]:
    statements = _keyed_triggers("flavors", "flavorid", "flavor")
    for table in ("flavor_extra_specs", "flavor_projects"):
        name = f"{OUTBOX}_{table}"
        of = ("INSERT INTO {o} (kind, key) SELECT 'flavor', flavorid FROM flavors "
              "WHERE id = {ref}.flavor_id;")
        statements += [
            f"CREATE TRIGGER IF NOT EXISTS {name}_ins AFTER INSERT ON {table} BEGIN "
            f"{of.format(o=OUTBOX, ref='NEW')} END",
            f"CREATE TRIGGER IF NOT EXISTS {name}_upd AFTER UPDATE ON {table} BEGIN "
            f"{of.format(o=OUTBOX, ref='NEW')} "
            f"INSERT INTO {OUTBOX} (kind, key) SELECT 'flavor', flavorid FROM flavors "
            f"WHERE id = OLD.flavor_id AND OLD.flavor_id IS NOT NEW.flavor_id; END",
            f"CREATE TRIGGER IF NOT EXISTS {name}_del AFTER DELETE ON {table} BEGIN "
            f"{of.format(o=OUTBOX, ref='OLD')} END",
        ]
    return statements


def cell_triggers() -> list[str]:
    statements = _keyed_triggers("instances", "uuid", "server")
    for table, column in INSTANCE_CHILDREN:
        statements += _keyed_triggers(table, column, "server")
    statements += _service_triggers()
    statements += _fanout_triggers("security_groups", "name, deleted",
                                   "security_group_instance_association",
                                   "security_group_id", " AND deleted = 0")
    statements += _fanout_triggers("instance_groups", "uuid", "instance_group_member",
                                   "group_id", "")
    return statements


def install(conn: apsw.Connection, name: str) -> str:
    """Install the outbox, its triggers and the epoch into ``conn``'s database,
    for whichever of the cell / flavor tables it holds. Idempotent; returns the epoch."""
    with conn:
        for statement in OUTBOX_DDL:
            conn.execute(statement)
        if schema.is_cell(conn):
            for statement in cell_triggers():
                conn.execute(statement)
        if schema.is_flavor_source(conn):
            for statement in _flavor_triggers():
                conn.execute(statement)
        conn.execute(f"INSERT OR IGNORE INTO {META} (name, value) VALUES ('epoch', ?)",
                     (uuidlib.uuid4().hex,))
        conn.execute(f"INSERT INTO {META} (name, value) VALUES ('cell', ?) "
                     "ON CONFLICT (name) DO UPDATE SET value = excluded.value", (name,))
    return epoch_of(conn)


def init_cell_db(path: str, name: str, flavors: bool = False) -> str:
    """Create a cell database (``flavors=True``: a flavor source) with its outbox,
    or install the outbox into an existing one. Returns the epoch."""
    conn = connection.open_cell(path, create=True)
    try:
        if flavors:
            schema.create_flavor_tables(conn)
        elif not schema.is_cell(conn) or not schema.has_table(conn, "request_specs"):
            schema.create_cell_tables(conn)
        return install(conn, name)
    finally:
        conn.close()


def epoch_of(conn: apsw.Connection) -> str:
    row = conn.execute(f"SELECT value FROM {META} WHERE name = 'epoch'").fetchone()
    if row is None:
        raise LookupError("no outbox installed in this database (run init_cell_db)")
    return row[0]


def name_of(conn: apsw.Connection) -> str | None:
    row = conn.execute(f"SELECT value FROM {META} WHERE name = 'cell'").fetchone()
    return row[0] if row else None


def outbox_head(conn: apsw.Connection) -> int:
    """The last seq ever allocated (0 before the first event); survives pruning."""
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (OUTBOX,)).fetchone()
    return int(row[0]) if row else 0


def outbox_oldest(conn: apsw.Connection) -> int:
    """The oldest seq still replayable; ``head + 1`` when the outbox is empty."""
    row = conn.execute(f"SELECT min(seq) FROM {OUTBOX}").fetchone()
    if row[0] is not None:
        return int(row[0])
    return outbox_head(conn) + 1


def read_events(conn: apsw.Connection, after: int, limit: int) -> list[tuple[int, str, str]]:
    """``(seq, kind, key)`` with seq > ``after``, in order, at most ``limit``."""
    return conn.execute(f"SELECT seq, kind, key FROM {OUTBOX} WHERE seq > ? ORDER BY seq LIMIT ?",
                        (after, limit)).fetchall()


def last_changed(conn: apsw.Connection, kind: str, keys: list[str]) -> dict[str, int]:
    """The seq of the latest event still in the outbox for each key (absent: older)."""
    rows = conn.execute(f"SELECT key, max(seq) FROM {OUTBOX} WHERE kind = ? AND key IN "
                        "(SELECT value FROM json_each(?)) GROUP BY key",
                        (kind, json.dumps(keys)))
    return {key: seq for key, seq in rows}


def prune(conn: apsw.Connection, keep_events: int, keep_seconds: float) -> int:
    """Delete the oldest events beyond retention and return how many went.

    An event is kept while it is both among the newest ``keep_events`` and younger
    than ``keep_seconds``: both bounds hold, so the outbox stays bounded at any
    write rate. Only a prefix is ever deleted (seq order), so what remains is
    always a gapless range ending at the head. At most PRUNE_CHUNK rows per call."""
    with conn:
        head = outbox_head(conn)
        cutoff = time.time() - keep_seconds
        upto = head - max(0, keep_events)
        # Age bound: walk from the oldest while rows are older than the cutoff.
        # The walk covers only rows about to be deleted (plus one).
        for seq, ts in conn.execute(f"SELECT seq, ts FROM {OUTBOX} WHERE seq > ? "
                                    "ORDER BY seq LIMIT ?", (upto, PRUNE_CHUNK)):
            if ts >= cutoff:
                break
            upto = seq
        oldest = outbox_oldest(conn)
        upto = min(upto, oldest - 1 + PRUNE_CHUNK)
        if upto < oldest:
            return 0
        conn.execute(f"DELETE FROM {OUTBOX} WHERE seq <= ?", (upto,))
        return conn.changes()


def enqueue(conn: apsw.Connection, kind: str, keys) -> None:
    conn.executemany(f"INSERT INTO {OUTBOX} (kind, key) VALUES (?, ?)",
                     ((kind, key) for key in keys))


@contextlib.contextmanager
def triggers_suspended(conn: apsw.Connection):
    """For bulk loads, inside the caller's write transaction: drop the outbox
    triggers, let the caller write and ``enqueue`` each changed key once, then put
    the triggers back. The transaction holds SQLite's write lock throughout, so no
    other writer can commit while the triggers are absent."""
    if not conn.in_transaction:
        raise RuntimeError("triggers_suspended needs an open write transaction")
    saved = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' "
                         "AND name LIKE ? ESCAPE '\\'",
                         (OUTBOX.replace("_", "\\_") + "\\_%",)).fetchall()
    for name, _sql in saved:
        conn.execute(f'DROP TRIGGER "{name}"')
    try:
        yield
    finally:
        for _name, sql in saved:
            conn.execute(sql)
