"""The outbox: triggers on the normalized tables append ``(kind, key)`` to the
outbox table (``shadow_replica_outbox``) in the same transaction as the change.

Why this gives the feed its guarantees:

- ``seq`` is an ``AUTOINCREMENT`` rowid. SQLite runs one write transaction at a
  time and rolls the sequence back with the transaction, so committed seqs are
  gapless and increase in commit order; ``AUTOINCREMENT`` never reuses a seq even
  after pruning has emptied the table, so the head survives pruning.
- A reader never sees a hole: a transaction's outbox rows become visible exactly
  when its data does.
- The epoch is a random id written once, when the outbox is installed; a rebuilt
  database gets a new one. Rows the database held before the outbox was installed
  are in no event: a replica's first attach takes a snapshot.

Into a database Nova made (``init_cell_db`` creates nothing there): each group of
triggers is installed only when the tables and columns it reads exist, every insert
gives its own timestamp in SQL that the system SQLite of Nova's hosts runs
(3.40 on Debian 12) as well as newer ones, and the two tables
are named as Nova's shadow tables so that ``nova-manage db archive_deleted_rows``
passes them by (see OUTBOX).

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

from replica import feed
from replica.cell import connection, schema

# Named as Nova names its shadow tables: ``nova-manage db archive_deleted_rows``
# reflects every table of the cell database, skips ``shadow_*`` ones and looks every
# other one up in Nova's models (a table it does not know stops it with KeyError).
# ``nova-manage db purge`` does delete shadow tables' rows: without ``--before`` the
# outbox is emptied (a prune: the head survives) and the meta rows are kept by a
# trigger; with ``--before`` both are left alone (no timestamp column Nova knows).
OUTBOX = "shadow_replica_outbox"
META = "shadow_replica_meta"
LEGACY_NAMES = {"replica_outbox": OUTBOX, "replica_meta": META}    # before they were renamed
PRUNE_CHUNK = 50_000           # rows deleted per prune call: bounds the write lock

# The current time as Unix seconds with a fraction, in SQL that works on every SQLite
# a cell may run (Debian 12's Python links 3.40; ``unixepoch('subsec')`` needs 3.42).
NOW = "((julianday('now') - 2440587.5) * 86400.0)"

OUTBOX_DDL = (
    f"""
    CREATE TABLE IF NOT EXISTS {OUTBOX} (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        ts REAL NOT NULL DEFAULT {NOW}
    )""",
    # last_changed_seq per key for drift checks
    f"CREATE INDEX IF NOT EXISTS {OUTBOX}_key_idx ON {OUTBOX} (kind, key)",
    f"CREATE TABLE IF NOT EXISTS {META} (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    f"CREATE TRIGGER IF NOT EXISTS {META}_kept BEFORE DELETE ON {META} "
    "BEGIN SELECT RAISE(IGNORE); END",
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
SERVICE_COLUMNS = ("host", "binary", "disabled", "forced_down", "deleted")


class TriggerGroup:
    """Triggers that are installed together, and the (table, columns) they read: a
    database without one of them (Nova's cell database has no request_specs, its
    instance_group_member has instance_id) does not get the group, so that no
    trigger can fail a write of the database's own."""

    def __init__(self, needs: dict[str, tuple[str, ...]], statements: list[str]):
        self.needs = needs
        self.statements = statements

    def fits(self, columns: dict[str, set[str]]) -> bool:
        return all(table in columns and set(cols) <= columns[table]
                   for table, cols in self.needs.items())


def _enqueue(kind: str, key_expr: str) -> str:
    return (f"INSERT INTO {OUTBOX} (kind, key, ts) SELECT '{kind}', {key_expr}, {NOW} "
            f"WHERE {key_expr} IS NOT NULL;")


def _keyed_triggers(table: str, column: str, kind: str,
                    name: str | None = None) -> TriggerGroup:
    """Insert / update / delete of a row enqueues the key the row names (``name``: the
    triggers' names, when another kind keys the same table too)."""
    name = name or f"{OUTBOX}_{table}"
    return TriggerGroup({table: (column,)}, [
        f"CREATE TRIGGER {name}_ins AFTER INSERT ON {table} BEGIN "
        f"{_enqueue(kind, f'NEW.{column}')} END",
        f"CREATE TRIGGER {name}_upd AFTER UPDATE ON {table} BEGIN "
        f"{_enqueue(kind, f'NEW.{column}')} "
        f"INSERT INTO {OUTBOX} (kind, key, ts) SELECT '{kind}', OLD.{column}, {NOW} "
        f"WHERE OLD.{column} IS NOT NULL AND OLD.{column} IS NOT NEW.{column}; END",
        f"CREATE TRIGGER {name}_del AFTER DELETE ON {table} BEGIN "
        f"{_enqueue(kind, f'OLD.{column}')} END",
    ])


def _host_instances(host_expr: str) -> str:
    return (f"INSERT INTO {OUTBOX} (kind, key, ts) SELECT 'server', uuid, {NOW} FROM instances "
            f"WHERE host = {host_expr} AND deleted = 0 ORDER BY id;")


def _service_triggers() -> TriggerGroup:
    name = f"{OUTBOX}_services"
    quoted = [f'"{c}"' for c in SERVICE_COLUMNS]
    changed = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in quoted)
    compute = "(OLD.\"binary\" = 'nova-compute' OR NEW.\"binary\" = 'nova-compute')"
    return TriggerGroup({"services": SERVICE_COLUMNS,
                         "instances": ("uuid", "host", "deleted", "id")}, [
        f"CREATE TRIGGER {name}_ins AFTER INSERT ON services "
        f"WHEN NEW.\"binary\" = 'nova-compute' BEGIN {_host_instances('NEW.host')} END",
        f"CREATE TRIGGER {name}_upd AFTER UPDATE OF "
        f"{', '.join(quoted)} ON services WHEN {compute} AND ({changed}) BEGIN "
        f"{_host_instances('NEW.host')} "
        f"INSERT INTO {OUTBOX} (kind, key, ts) SELECT 'server', uuid, {NOW} FROM instances "
        f"WHERE host = OLD.host AND OLD.host IS NOT NEW.host AND deleted = 0 ORDER BY id; END",
        f"CREATE TRIGGER {name}_del AFTER DELETE ON services "
        f"WHEN OLD.\"binary\" = 'nova-compute' BEGIN {_host_instances('OLD.host')} END",
    ])


def _fanout_triggers(table: str, columns: tuple[str, ...], members: str, fk: str,
                     live: bool) -> TriggerGroup:
    """A change to a group-like row enqueues every instance associated with it."""
    name = f"{OUTBOX}_{table}"
    alive = " AND deleted = 0" if live else ""

    def members_of(ref: str) -> str:
        return (f"INSERT INTO {OUTBOX} (kind, key, ts) SELECT 'server', instance_uuid, {NOW} "
                f"FROM {members} WHERE {fk} = {ref}.id AND instance_uuid IS NOT NULL{alive} "
                "ORDER BY id;")

    member_columns = (fk, "instance_uuid", "id") + (("deleted",) if live else ())
    return TriggerGroup({table: columns + ("id",), members: member_columns}, [
        f"CREATE TRIGGER {name}_upd AFTER UPDATE OF {', '.join(columns)} ON {table} "
        f"BEGIN {members_of('NEW')} END",
        f"CREATE TRIGGER {name}_del AFTER DELETE ON {table} "
        f"BEGIN {members_of('OLD')} END",
    ])


def _flavor_triggers() -> list[TriggerGroup]:
    groups = [_keyed_triggers("flavors", "flavorid", "flavor")]
    of = ("INSERT INTO {o} (kind, key, ts) SELECT 'flavor', flavorid, {now} FROM flavors "
          "WHERE id = {ref}.flavor_id;")
    for table in ("flavor_extra_specs", "flavor_projects"):
        name = f"{OUTBOX}_{table}"
        groups.append(TriggerGroup({table: ("flavor_id",), "flavors": ("id", "flavorid")}, [
            f"CREATE TRIGGER {name}_ins AFTER INSERT ON {table} BEGIN "
            f"{of.format(o=OUTBOX, now=NOW, ref='NEW')} END",
            f"CREATE TRIGGER {name}_upd AFTER UPDATE ON {table} BEGIN "
            f"{of.format(o=OUTBOX, now=NOW, ref='NEW')} "
            f"INSERT INTO {OUTBOX} (kind, key, ts) SELECT 'flavor', flavorid, {NOW} "
            "FROM flavors WHERE id = OLD.flavor_id AND OLD.flavor_id IS NOT NEW.flavor_id; END",
            f"CREATE TRIGGER {name}_del AFTER DELETE ON {table} BEGIN "
            f"{of.format(o=OUTBOX, now=NOW, ref='OLD')} END",
        ]))
    return groups


def _quota_triggers() -> list[TriggerGroup]:
    """A project's quota row or server group enqueues the project's quota key
    (feed.quota_key); a quota class row, the defaults' key."""
    kind, name = "quota", f"{OUTBOX}_quota"
    groups = []
    for table in ("quotas", "instance_groups"):
        key = "'project/' || {ref}.project_id"
        groups.append(TriggerGroup({table: ("project_id",), "quotas": ("project_id",)}, [
            f"CREATE TRIGGER {name}_{table}_ins AFTER INSERT ON {table} BEGIN "
            f"{_enqueue(kind, key.format(ref='NEW'))} END",
            f"CREATE TRIGGER {name}_{table}_upd AFTER UPDATE ON {table} BEGIN "
            f"{_enqueue(kind, key.format(ref='NEW'))} "
            f"INSERT INTO {OUTBOX} (kind, key, ts) SELECT '{kind}', {key.format(ref='OLD')}, "
            f"{NOW} WHERE OLD.project_id IS NOT NULL AND OLD.project_id IS NOT "
            "NEW.project_id; END",
            f"CREATE TRIGGER {name}_{table}_del AFTER DELETE ON {table} BEGIN "
            f"{_enqueue(kind, key.format(ref='OLD'))} END",
        ]))
    default = f"'{feed.QUOTA_DEFAULT_KEY}'"
    groups.append(TriggerGroup({"quota_classes": ("class_name",)}, [
        f"CREATE TRIGGER {name}_classes_{op} AFTER {event} ON quota_classes BEGIN "
        f"{_enqueue(kind, default)} END"
        for op, event in (("ins", "INSERT"), ("upd", "UPDATE"), ("del", "DELETE"))]))
    return groups


# An instance action's feed key (feed.instance_action_key) in SQL, from a row of
# instance_actions (SQLite's printf: only SQLite cells have triggers).
def _action_key(ref: str) -> str:
    return f"{ref}.instance_uuid || '/' || printf('%020d', {ref}.id)"


def _action_triggers() -> list[TriggerGroup]:
    """An action's row, or one of its events, enqueues the action."""
    kind = "instance_action"
    name = f"{OUTBOX}_instance_actions"
    groups = [TriggerGroup({"instance_actions": ("id", "instance_uuid")}, [
        f"CREATE TRIGGER {name}_ins AFTER INSERT ON instance_actions BEGIN "
        f"{_enqueue(kind, _action_key('NEW'))} END",
        f"CREATE TRIGGER {name}_upd AFTER UPDATE ON instance_actions BEGIN "
        f"{_enqueue(kind, _action_key('NEW'))} "
        f"INSERT INTO {OUTBOX} (kind, key, ts) SELECT '{kind}', {_action_key('OLD')}, {NOW} "
        f"WHERE OLD.instance_uuid IS NOT NULL AND ({_action_key('OLD')}) IS NOT "
        f"({_action_key('NEW')}); END",
        f"CREATE TRIGGER {name}_del AFTER DELETE ON instance_actions BEGIN "
        f"{_enqueue(kind, _action_key('OLD'))} END",
    ])]
    of = (f"INSERT INTO {OUTBOX} (kind, key, ts) SELECT '{kind}', {_action_key('a')}, {NOW} "
          "FROM instance_actions a WHERE a.id = {ref}.action_id AND a.instance_uuid IS NOT "
          "NULL;")
    events = f"{OUTBOX}_instance_actions_events"
    groups.append(TriggerGroup({"instance_actions_events": ("action_id",),
                                "instance_actions": ("id", "instance_uuid")}, [
        f"CREATE TRIGGER {events}_ins AFTER INSERT ON instance_actions_events BEGIN "
        f"{of.format(ref='NEW')} END",
        f"CREATE TRIGGER {events}_upd AFTER UPDATE ON instance_actions_events BEGIN "
        f"{of.format(ref='NEW')} "
        f"INSERT INTO {OUTBOX} (kind, key, ts) SELECT '{kind}', {_action_key('a')}, {NOW} "
        "FROM instance_actions a WHERE a.id = OLD.action_id AND OLD.action_id IS NOT "
        "NEW.action_id AND a.instance_uuid IS NOT NULL; END",
        f"CREATE TRIGGER {events}_del AFTER DELETE ON instance_actions_events BEGIN "
        f"{of.format(ref='OLD')} END",
    ]))
    return groups


def _keypair_triggers() -> TriggerGroup:
    """A key pair row (Nova's API database) enqueues its key (feed.keypair_key)."""
    name = f"{OUTBOX}_key_pairs"

    def key(ref: str) -> str:
        return f"{ref}.user_id || '/' || {ref}.name"

    return TriggerGroup({"key_pairs": ("user_id", "name"), "flavors": ("flavorid",)}, [
        f"CREATE TRIGGER {name}_ins AFTER INSERT ON key_pairs BEGIN "
        f"{_enqueue('keypair', key('NEW'))} END",
        f"CREATE TRIGGER {name}_upd AFTER UPDATE ON key_pairs BEGIN "
        f"{_enqueue('keypair', key('NEW'))} "
        f"INSERT INTO {OUTBOX} (kind, key, ts) SELECT 'keypair', {key('OLD')}, {NOW} "
        f"WHERE ({key('OLD')}) IS NOT ({key('NEW')}); END",
        f"CREATE TRIGGER {name}_del AFTER DELETE ON key_pairs BEGIN "
        f"{_enqueue('keypair', key('OLD'))} END",
    ])


# Services columns a hypervisor shows (its state, status and service block).
HYPERVISOR_SERVICE_COLUMNS = ("host", "binary", "disabled", "disabled_reason", "forced_down",
                              "deleted")


def _hypervisor_triggers() -> list[TriggerGroup]:
    """A compute node row enqueues its hypervisor key (its uuid); a nova-compute
    service change a hypervisor shows enqueues the compute nodes of its host."""
    name = f"{OUTBOX}_compute_nodes_services"
    quoted = [f'"{c}"' for c in HYPERVISOR_SERVICE_COLUMNS]
    changed = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in quoted)
    compute = "(OLD.\"binary\" = 'nova-compute' OR NEW.\"binary\" = 'nova-compute')"

    def nodes_on(host: str, extra: str = "") -> str:
        return (f"INSERT INTO {OUTBOX} (kind, key, ts) SELECT 'hypervisor', uuid, {NOW} "
                f"FROM compute_nodes WHERE host = {host} AND uuid IS NOT NULL{extra} "
                "ORDER BY id;")

    return [_keyed_triggers("compute_nodes", "uuid", "hypervisor"),
            TriggerGroup({"services": HYPERVISOR_SERVICE_COLUMNS,
                          "compute_nodes": ("uuid", "host", "id")}, [
        f"CREATE TRIGGER {name}_ins AFTER INSERT ON services "
        f"WHEN NEW.\"binary\" = 'nova-compute' BEGIN {nodes_on('NEW.host')} END",
        f"CREATE TRIGGER {name}_upd AFTER UPDATE OF "
        f"{', '.join(quoted)} ON services WHEN {compute} AND ({changed}) BEGIN "
        f"{nodes_on('NEW.host')} "
        f"{nodes_on('OLD.host', ' AND OLD.host IS NOT NEW.host')} END",
        f"CREATE TRIGGER {name}_del AFTER DELETE ON services "
        f"WHEN OLD.\"binary\" = 'nova-compute' BEGIN {nodes_on('OLD.host')} END",
    ])]
def _service_row_triggers() -> TriggerGroup:
    """A services row enqueues its service (feed key: the uuid); every report of a
    service writes its row, and so its updated_at reaches the replica (os-services and
    the availability zones' detail show it)."""
    name = f"{OUTBOX}_service_rows"
    return TriggerGroup({"services": ("uuid",)}, [
        f"CREATE TRIGGER {name}_ins AFTER INSERT ON services BEGIN "
        f"{_enqueue('service', 'NEW.uuid')} END",
        f"CREATE TRIGGER {name}_upd AFTER UPDATE ON services BEGIN "
        f"{_enqueue('service', 'NEW.uuid')} "
        f"INSERT INTO {OUTBOX} (kind, key, ts) SELECT 'service', OLD.uuid, {NOW} "
        f"WHERE OLD.uuid IS NOT NULL AND OLD.uuid IS NOT NEW.uuid; END",
        f"CREATE TRIGGER {name}_del AFTER DELETE ON services BEGIN "
        f"{_enqueue('service', 'OLD.uuid')} END",
    ])


def _aggregate_triggers() -> list[TriggerGroup]:
    """An aggregate's row, or one of its hosts or metadata, enqueues the aggregate (feed
    key: its id as text)."""
    return [_keyed_triggers("aggregates", "id", "aggregate"),
            _keyed_triggers("aggregate_hosts", "aggregate_id", "aggregate"),
            _keyed_triggers("aggregate_metadata", "aggregate_id", "aggregate")]


def _server_group_triggers() -> list[TriggerGroup]:
    """A server group (Nova's API database), its policy rows and its member rows enqueue
    the group's server_group key (its uuid)."""
    name = f"{OUTBOX}_server_group"
    groups = [TriggerGroup({"instance_groups": ("uuid",)}, [
        f"CREATE TRIGGER {name}_ins AFTER INSERT ON instance_groups BEGIN "
        f"{_enqueue('server_group', 'NEW.uuid')} END",
        f"CREATE TRIGGER {name}_upd AFTER UPDATE ON instance_groups BEGIN "
        f"{_enqueue('server_group', 'NEW.uuid')} "
        f"INSERT INTO {OUTBOX} (kind, key, ts) SELECT 'server_group', OLD.uuid, {NOW} "
        f"WHERE OLD.uuid IS NOT NULL AND OLD.uuid IS NOT NEW.uuid; END",
        f"CREATE TRIGGER {name}_del AFTER DELETE ON instance_groups BEGIN "
        f"{_enqueue('server_group', 'OLD.uuid')} END",
    ])]
    of = ("INSERT INTO {o} (kind, key, ts) SELECT 'server_group', uuid, {now} "
          "FROM instance_groups WHERE id = {ref}.group_id;")
    for table in ("instance_group_policy", "instance_group_member"):
        each = f"{name}_{table}"
        groups.append(TriggerGroup({table: ("group_id",), "instance_groups": ("id", "uuid")}, [
            f"CREATE TRIGGER {each}_ins AFTER INSERT ON {table} BEGIN "
            f"{of.format(o=OUTBOX, now=NOW, ref='NEW')} END",
            f"CREATE TRIGGER {each}_upd AFTER UPDATE ON {table} BEGIN "
            f"{of.format(o=OUTBOX, now=NOW, ref='NEW')} "
            f"INSERT INTO {OUTBOX} (kind, key, ts) SELECT 'server_group', uuid, {NOW} "
            "FROM instance_groups WHERE id = OLD.group_id AND OLD.group_id IS NOT NEW.group_id; "
            "END",
            f"CREATE TRIGGER {each}_del AFTER DELETE ON {table} BEGIN "
            f"{of.format(o=OUTBOX, now=NOW, ref='OLD')} END",
        ]))
    return groups


def cell_triggers() -> list[TriggerGroup]:
    groups = [_keyed_triggers("instances", "uuid", "server")]
    for table, column in INSTANCE_CHILDREN:
        groups.append(_keyed_triggers(table, column, "server"))
    groups.append(_service_triggers())
    groups.append(_fanout_triggers("security_groups", ("name", "deleted"),
                                   "security_group_instance_association",
                                   "security_group_id", live=True))
    groups.append(_fanout_triggers("instance_groups", ("uuid",), "instance_group_member",
                                   "group_id", live=False))
    groups += _action_triggers()
    groups += _hypervisor_triggers()
    groups.append(_service_row_triggers())
    return groups


# Nova's API database: the rows of its servers' entities that live there (server groups,
# request specs, build requests and the instance mappings that end them). Their
# ``('server', uuid)`` changes are carried into the cell outbox by the cell's publisher
# (``sqlite_source.ChangeCarrier``); the API database's own publisher publishes its
# build requests (``build_requests.py``).
API_SERVER_TABLES = (("request_specs", "instance_uuid"),
                     ("instance_group_member", "instance_uuid"),
                     ("build_requests", "instance_uuid"),
                     ("instance_mappings", "instance_uuid"))


def api_server_triggers() -> list[TriggerGroup]:
    groups = [_keyed_triggers(table, column, "server") for table, column in API_SERVER_TABLES]
    groups.append(_fanout_triggers("instance_groups", ("uuid",), "instance_group_member",
                                   "group_id", live=False))
    return groups


def trigger_groups(conn: apsw.Connection) -> list[TriggerGroup]:
    """The trigger groups for whichever cell / flavor tables ``conn``'s database holds
    (and with the columns they read)."""
    columns = table_columns(conn)
    groups = []
    if "instances" in columns:
        groups += cell_triggers()
    elif "request_specs" in columns:           # Nova's API database
        groups += api_server_triggers()
    if "flavors" in columns:
        groups += _flavor_triggers()
        groups.append(_keypair_triggers())
        groups += _aggregate_triggers()
    if "quotas" in columns and "instances" not in columns:     # a cell's are Nova's old ones
        groups += _quota_triggers()
    if "instance_groups" in columns and "flavors" in columns:     # the API database's
        groups += _server_group_triggers()
    return [group for group in groups if group.fits(columns)]


def table_columns(conn: apsw.Connection) -> dict[str, set[str]]:
    """Every table of the database and its column names."""
    tables = [name for (name,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' "
        "ESCAPE '\\'")]
    return {table: {row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')}
            for table in tables}


def _outbox_trigger_names(conn: apsw.Connection) -> list[str]:
    return [name for (name,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'trigger' AND "
        "(name LIKE ? ESCAPE '\\' OR name LIKE 'replica\\_outbox\\_%' ESCAPE '\\')",
        (OUTBOX.replace("_", "\\_") + "\\_%",))]


def install(conn: apsw.Connection, name: str) -> str:
    """Install the outbox, its triggers and the epoch into ``conn``'s database, for
    whichever of the cell / flavor tables it holds. Idempotent; the triggers are
    replaced by the current ones (an earlier install's too). Returns the epoch."""
    with conn:
        for trigger in _outbox_trigger_names(conn):
            conn.execute(f'DROP TRIGGER "{trigger}"')
        for old, new in LEGACY_NAMES.items():
            if schema.has_table(conn, old) and not schema.has_table(conn, new):
                conn.execute(f'ALTER TABLE "{old}" RENAME TO "{new}"')
        conn.execute("DROP INDEX IF EXISTS replica_outbox_key_idx")
        for statement in OUTBOX_DDL:
            conn.execute(statement)
        for group in trigger_groups(conn):
            for statement in group.statements:
                conn.execute(statement)
        conn.execute(f"INSERT OR IGNORE INTO {META} (name, value) VALUES ('epoch', ?)",
                     (uuidlib.uuid4().hex,))
        conn.execute(f"INSERT INTO {META} (name, value) VALUES ('cell', ?) "
                     "ON CONFLICT (name) DO UPDATE SET value = excluded.value", (name,))
    return epoch_of(conn)


def init_cell_db(path: str, name: str, flavors: bool = False) -> str:
    """Install the outbox into the database at ``path`` and return the epoch.

    A new (or empty) database first gets this project's tables: the cell tables, or
    with ``flavors=True`` the flavor source tables; one this project made before gets
    the tables it lacks. Any other database (one Nova made) gets the outbox only:
    nothing of Nova's is created or written."""
    conn = connection.open_cell(path, create=True)
    try:
        tables = set(table_columns(conn))
        ours = not (tables - {OUTBOX, META, *LEGACY_NAMES, "sqlite_sequence"}) or \
            bool(tables & {META, "replica_meta"})
        if ours:
            if flavors:
                schema.create_flavor_tables(conn)
            else:
                schema.create_cell_tables(conn)
        elif not (schema.is_cell(conn) or schema.is_flavor_source(conn)):
            raise LookupError(f"{path}: neither a cell database (no instances table) nor "
                              "a flavor source (no flavors table)")
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
    conn.executemany(f"INSERT INTO {OUTBOX} (kind, key, ts) VALUES (?, ?, {NOW})",
                     ((kind, key) for key in keys))


@contextlib.contextmanager
def triggers_suspended(conn: apsw.Connection):
    """For bulk loads, inside the caller's write transaction: drop the outbox
    triggers, let the caller write and ``enqueue`` each changed key once, then put
    the triggers back. The transaction holds SQLite's write lock throughout, so no
    other writer can commit while the triggers are absent."""
    if not conn.in_transaction:
        raise RuntimeError("triggers_suspended needs an open write transaction")
    saved = [conn.execute("SELECT name, sql FROM sqlite_master WHERE name = ?",
                          (name,)).fetchone() for name in _outbox_trigger_names(conn)]
    for name, _sql in saved:
        conn.execute(f'DROP TRIGGER "{name}"')
    try:
        yield
    finally:
        for _name, sql in saved:
            conn.execute(sql)
