"""Every write statement of the replica (ingest is the only caller).

Rows come from ``replica.render`` as tuples in the order of its column tuples; the
statements here are built from those tuples, so a column added to a table by a new
schema step and to the render is written without a change here.

Invariants kept by this module:
- a group of changes and the positions that cover them commit in ONE transaction;
- a resync is staged in TEMP tables (the writer connection's own, invisible to
  readers) and swapped in with one short transaction: readers see the old rows of
  the cell until that commit, then the new ones.

Speed: an upsert is ``INSERT .. ON CONFLICT DO UPDATE`` (the row keeps its rowid and
its place; INSERT OR REPLACE would delete it from every index and insert it again). On a
table with stable columns the rows of a group whose keys the table already holds (one
lookup for the group) are written with a plain ``UPDATE`` instead: the upsert's insert
attempt, which fails on the key, is what it saves (a server row 14-16 -> 11-12 us).
A resync stages only the rows that differ from what the cell holds (``stage_begin``
loads the cell's entity hashes; ``held_hash`` lets the caller skip rendering an entity
that is already right), and the swap is one set-based statement per table, with a
bigger page cache for the duration of that transaction.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from operator import itemgetter
from typing import Iterable, Sequence

import apsw
import orjson

from replica.feed import DIGEST_BUCKETS
from replica.kinds import KINDS, renderers
from replica.position import Position
from replica.store.usage import UsageKeeper

DEAD_LETTER_PAYLOAD_BYTES = 512   # enough to recognise a message, bounded per row
DEAD_LETTER_KEEP = 10_000         # the table keeps the newest rows only
DEAD_LETTER_MESSAGE_CHARS = 2000
WRITER_CACHE_KIB = 131_072        # index pages of a 100,000-server cell stay in memory
SWAP_CACHE_KIB_PER_ROW = 8        # during a swap: every staged row's pages stay in memory
SWAP_CACHE_KIB_MAX = 1_048_576    # ... up to this; given back when the swap commits
ROW_VALUE_TYPES = (str, int, float, type(None))   # what a row rendered elsewhere may hold
ROW_SIGNATURES_KEPT = 4096        # value-type tuples of rows that passed the full check


@dataclass(frozen=True, slots=True)
class Table:
    """How one entity kind maps to its replica table."""

    name: str
    key: str          # primary key column
    owner: str        # the column naming the feed that owns the row
    columns: tuple[str, ...]
    # Indexed columns that an entity's new version almost never changes (see
    # upsert_stable_sql); empty: every upsert sets every column.
    stable: tuple[str, ...] = ()

    def insert_sql(self, target: str) -> str:
        names = ", ".join(self.columns)
        marks = ", ".join("?" * len(self.columns))
        return f"INSERT INTO {target} ({names}) VALUES ({marks})"

    def _on_conflict(self) -> str:
        sets = ", ".join(f"{c} = excluded.{c}" for c in self.columns if c != self.key)
        return f" ON CONFLICT ({self.key}) DO UPDATE SET {sets}"

    def upsert_sql(self) -> str:
        """Insert a row or overwrite the row of its key in place (same rowid)."""
        return self.insert_sql(self.name) + self._on_conflict()

    def upsert_stable_sql(self) -> str:
        """Insert a row, or overwrite the row of its key when its ``stable`` columns are
        unchanged, leaving those columns out of the SET: SQLite rewrites the entries of
        every index that has a column in the SET list, whatever the values (measured on
        a server row: 67 us per update with every column set, 43 us without them). A row
        whose stable columns differ is left as it is, and counts no change: then
        ``update_changed_sql`` runs over the same parameter tuples."""
        sets = ", ".join(f"{c} = excluded.{c}" for c in self.columns
                         if c != self.key and c not in self.stable)
        same = " AND ".join(f"{self.name}.{c} IS excluded.{c}" for c in self.stable)
        return (self.insert_sql(self.name)
                + f" ON CONFLICT ({self.key}) DO UPDATE SET {sets} WHERE {same}")

    def update_same_sql(self) -> str:
        """Overwrite the row of a key when its ``stable`` columns are unchanged, leaving
        those columns out of the SET (as ``upsert_stable_sql`` does for a key held
        already; numbered parameters: the same tuples as the upsert's)."""
        at = {c: i + 1 for i, c in enumerate(self.columns)}
        sets = ", ".join(f"{c} = ?{at[c]}" for c in self.columns
                         if c != self.key and c not in self.stable)
        same = " AND ".join(f"{c} IS ?{at[c]}" for c in self.stable)
        return f"UPDATE {self.name} SET {sets} WHERE {self.key} = ?{at[self.key]} AND {same}"

    def held_keys_sql(self) -> str:
        """Which of the keys in a JSON array the table holds a row for."""
        return (f"SELECT j.value FROM json_each(?) j WHERE EXISTS "
                f"(SELECT 1 FROM {self.name} t WHERE t.{self.key} = j.value)")

    def update_changed_sql(self) -> str:
        """Every column of the row of a key whose stable columns differ from the given
        ones (numbered parameters: the same tuples as the upsert's)."""
        at = {c: i + 1 for i, c in enumerate(self.columns)}
        sets = ", ".join(f"{c} = ?{at[c]}" for c in self.columns if c != self.key)
        differ = " OR ".join(f"{c} IS NOT ?{at[c]}" for c in self.stable)
        return f"UPDATE {self.name} SET {sets} WHERE {self.key} = ?{at[self.key]} AND ({differ})"

    def upsert_from_sql(self, source: str) -> str:
        """Every row of ``source`` upserted into the table, in one statement."""
        names = ", ".join(self.columns)
        # "WHERE true": an upsert's SELECT needs a WHERE before ON CONFLICT (parsing)
        return (f"INSERT INTO {self.name} ({names}) SELECT {names} FROM {source} WHERE true"
                + self._on_conflict())


@dataclass(frozen=True, slots=True)
class _RowShape:
    """What a row of one table must look like: where its key, owner, seq and hash are,
    which columns may not be NULL, and the value-type tuples of rows already checked."""

    columns: tuple[str, ...]
    key_at: int
    owner_at: int
    seq_at: int
    hash_at: int
    not_null: frozenset
    good: set


@dataclass(slots=True)      # not frozen: built once per upsert (see feed.Event)
class Change:
    """One entity change for the replica: ``row`` (render tuple) to upsert, None to delete."""

    kind: str
    key: str
    cell: str
    row: tuple | None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    cell: str | None
    reason: str
    message: str
    payload: bytes
    received_at: float


class Writer:
    """The single writer's statements over one apsw connection (see open_writer)."""

    def __init__(self, conn: apsw.Connection, *kind_columns: Sequence[str]):
        """``kind_columns``: the row columns of the kinds this writer writes, in
        ``replica.kinds.KINDS`` order (a render's column tuples: the first kinds, as
        many as are given); none given: every kind, with ``replica.render``'s columns."""
        self.conn = conn
        if not kind_columns:
            from replica import render  # imported here, statically: the binary sees it
            declared = renderers(render)
            kind_columns = tuple(declared[name][0] for name in KINDS)
        self.tables = {
            kind.name: Table(kind.table, kind.key_column, kind.owner_column, tuple(columns),
                             stable=tuple(c for c in kind.stable if c in columns))
            for kind, columns in zip(KINDS.values(), kind_columns)}
        for table in self.tables.values():
            for needed in (table.key, table.owner, "entity_hash", "bucket", "seq"):
                if needed not in table.columns:
                    raise ValueError(f"{table.name}: render columns lack {needed!r}")
        self._upsert_sql = {kind: t.upsert_stable_sql() if t.stable else t.upsert_sql()
                            for kind, t in self.tables.items()}
        self._changed_sql = {kind: t.update_changed_sql() for kind, t in self.tables.items()
                             if t.stable}
        self._same_sql = {kind: t.update_same_sql() for kind, t in self.tables.items()
                          if t.stable}
        self._held_sql = {kind: t.held_keys_sql() for kind, t in self.tables.items()
                          if t.stable}
        # Tables with triggers (the servers' project usage, schema step 7): the rows the
        # triggers write count in total_changes too, so a row its upsert left alone
        # cannot be told by the count: their upsert returns the rows it wrote.
        triggered = {name for (name,) in conn.execute(
            "SELECT DISTINCT tbl_name FROM sqlite_master WHERE type = 'trigger'")}
        self._triggered = {kind for kind, t in self.tables.items()
                                if t.stable and t.name in triggered}
        self._upsert_returning_sql = {kind: self._upsert_sql[kind] + " RETURNING 1"
                                      for kind in self._triggered}
        self._delete_sql = {kind: f"DELETE FROM {t.name} WHERE {t.key} = ? AND {t.owner} = ?"
                            for kind, t in self.tables.items()}
        self._key_at = {kind: t.columns.index(t.key) for kind, t in self.tables.items()}
        self._hash_at = {kind: t.columns.index("entity_hash") for kind, t in self.tables.items()}
        self._shapes = {kind: self._row_shape(t) for kind, t in self.tables.items()}
        # Each project's usage follows the server rows (replica/store/usage.py).
        servers = next((kind for kind, t in self.tables.items() if t.name == "servers"), None)
        self._usage_kind = servers if servers is not None and UsageKeeper.applies_to(
            self.tables[servers].columns) else None
        self._usage = (UsageKeeper(self.tables[servers].columns)
                       if self._usage_kind is not None else None)
        self._staging_ready = False
        self._held: dict[str, dict[str, int]] = {}       # kind -> {key: entity_hash} now held
        self._held_cell: str | None = None               # ... by this cell
        self._snapshot_keys: dict[str, set[str]] = {}    # kind -> every key of the snapshot
        self._staged_rows = 0
        # The writer's page cache decides upsert and swap speed (four indexes per row).
        conn.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}")

    def _row_shape(self, table: Table) -> _RowShape:
        not_null = frozenset(name for _cid, name, _type, notnull, _default, _pk
                             in self.conn.execute(f"PRAGMA table_info({table.name})")
                             if notnull)
        at = table.columns.index
        return _RowShape(table.columns, at(table.key), at(table.owner), at("seq"),
                         at("entity_hash"), not_null, set())

    # -- rows rendered elsewhere -------------------------------------------------------

    def row_problem(self, kind: str, key: str, owner: str, seq: int, entity_hash: int,
                    row: Sequence) -> str | None:
        """What keeps ``row`` (a row rendered by the publisher, in this table's column
        order) from being written as it is for the event (``kind``, ``key``, ``seq``,
        the hash of its entity's bytes) of feed ``owner``; None: nothing. A value-type
        tuple that passed once passes again without the per-column check."""
        shape = self._shapes.get(kind)
        if shape is None:
            return f"no table for kind {kind!r}"
        if len(row) != len(shape.columns):
            return f"{len(row)} values for {len(shape.columns)} columns"
        if (row[shape.key_at] != key or row[shape.owner_at] != owner
                or row[shape.seq_at] != seq or row[shape.hash_at] != entity_hash):
            return "its key, feed, seq or entity hash is not the event's"
        signature = tuple(map(type, row))
        if signature in shape.good:
            return None
        for column, value in zip(shape.columns, row):
            if type(value) not in ROW_VALUE_TYPES:
                return f"column {column} holds a {type(value).__name__}"
            if value is None and column in shape.not_null:
                return f"column {column} is null"
        if len(shape.good) >= ROW_SIGNATURES_KEPT:
            shape.good.clear()
        shape.good.add(signature)
        return None

    # -- positions ---------------------------------------------------------------

    def load_positions(self) -> dict[str, Position]:
        rows = self.conn.execute("SELECT cell, epoch, seq FROM positions").fetchall()
        return {cell: Position(cell, epoch, seq) for cell, epoch, seq in rows}

    def _write_positions(self, positions: Iterable[Position], now: float) -> None:
        self.conn.executemany(
            "INSERT INTO positions (cell, epoch, seq, applied_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (cell) DO UPDATE SET epoch = excluded.epoch, seq = excluded.seq, "
            "applied_at = excluded.applied_at",
            [(p.cell, p.epoch, p.seq, now) for p in positions])

    def mark_live(self, cell: str) -> None:
        """Record that ``cell`` has been live (caught up) once; the API serves reads that
        include it from then on, even across restarts."""
        with self.conn:
            self.conn.execute("INSERT INTO cells_live (cell, first_live_at) VALUES (?, ?) "
                              "ON CONFLICT (cell) DO NOTHING", (cell, time.time()))

    # -- applying changes -----------------------------------------------------------

    def _write_changes(self, changes: Iterable[Change]) -> int:
        # Only the last change of an entity in a group matters (each carries the whole
        # entity); after collapsing, upserts touch distinct keys, so the upserts and
        # the deletes each run as one executemany, the deletes after the upserts.
        #
        # But a delete only removes its own feed's row (DELETE ... AND owner): one from
        # another feed than the key's last change must not replace that change. A
        # server's upsert from its cell and the API database feed's tombstone of the
        # same server (it is no build request) arrive in one group when one API
        # database row changes both: collapsed by key alone, the upsert was lost. Such
        # a delete is kept apart and runs after the upserts, where it removes nothing
        # the other feed wrote.
        last: dict[tuple[str, str], Change] = {}
        apart: dict[tuple[str, str, str], Change] = {}
        count = 0
        for change in changes:
            entity = (change.kind, change.key)
            held = last.get(entity)
            if change.row is None and held is not None and held.cell != change.cell:
                apart[(change.kind, change.key, change.cell)] = change
            else:
                last[entity] = change       # a later change replaces the value
                if apart:
                    apart.pop((change.kind, change.key, change.cell), None)
            count += 1
        upserts: dict[str, list[tuple]] = {kind: [] for kind in self.tables}
        deletes: dict[str, list[tuple[str, str]]] = {kind: [] for kind in self.tables}
        for change in (*last.values(), *apart.values()):
            if change.row is None:
                deletes[change.kind].append((change.key, change.cell))
            else:
                upserts[change.kind].append(change.row)
        if self._usage_kind is not None:
            kind = self._usage_kind
            self._usage.apply(self.conn, self._usage.usage_rows(upserts[kind]), deletes[kind])
        for kind in self.tables:
            if upserts[kind]:
                self._write_upserts(kind, upserts[kind])
            if deletes[kind]:
                self.conn.executemany(self._delete_sql[kind], deletes[kind])
        return count

    def _write_upserts(self, kind: str, rows: list[tuple]) -> None:
        if kind in self._triggered:
            # The triggers' rows count in total_changes too: the upsert names each row
            # it wrote instead (RETURNING), one pass over the rows.
            written = sum(1 for _ in self.conn.executemany(
                self._upsert_returning_sql[kind], rows))
        elif kind in self._same_sql:
            key_at = self._key_at[kind]
            keys = orjson.dumps(list(map(itemgetter(key_at), rows))).decode()
            held = {key for (key,) in self.conn.execute(self._held_sql[kind], (keys,))}
            if len(held) == len(rows):      # the keys of a group are distinct: all held
                known, new = rows, ()
            elif held:
                known = [row for row in rows if row[key_at] in held]
                new = [row for row in rows if row[key_at] not in held]
            else:
                known, new = (), rows
            before = self.conn.total_changes()
            if known:
                self.conn.executemany(self._same_sql[kind], known)
            if new:
                self.conn.executemany(self._upsert_sql[kind], new)
            written = self.conn.total_changes() - before
        else:
            self.conn.executemany(self._upsert_sql[kind], rows)
            return
        # Each row inserted or overwritten counts one: fewer means some rows' stable
        # columns differ (soft deleted, another cell's now, ...).
        if written < len(rows):
            self.conn.executemany(self._changed_sql[kind], rows)

    def apply(self, changes: Sequence[Change], positions: Sequence[Position] = (),
              dead_letters: Sequence[DeadLetter] = ()) -> int:
        """Apply changes, the positions that cover them and dead letters in one
        transaction. Returns the number of changes written."""
        now = time.time()
        with self.conn:
            count = self._write_changes(changes)
            if positions:
                self._write_positions(positions, now)
            if dead_letters:
                self._write_dead_letters(dead_letters)
        return count

    # -- dead letters ----------------------------------------------------------------

    def _write_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        self.conn.executemany(
            "INSERT INTO dead_letters (received_at, cell, reason, message, payload) "
            "VALUES (?, ?, ?, ?, ?)",
            [(d.received_at, d.cell, d.reason, d.message[:DEAD_LETTER_MESSAGE_CHARS],
              bytes(d.payload[:DEAD_LETTER_PAYLOAD_BYTES])) for d in letters])
        self.conn.execute(
            "DELETE FROM dead_letters WHERE id <= (SELECT max(id) FROM dead_letters) - ?",
            (DEAD_LETTER_KEEP,))

    def add_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        with self.conn:
            self._write_dead_letters(letters)

    def dead_letter_counts(self) -> dict[str | None, int]:
        rows = self.conn.execute(
            "SELECT cell, count(*) FROM dead_letters GROUP BY cell").fetchall()
        return {cell: n for cell, n in rows}

    def dead_letters(self, limit: int = 100) -> list[dict]:
        rows = self.conn.execute(
            "SELECT id, received_at, cell, reason, message, payload FROM dead_letters "
            "ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [{"id": i, "received_at": t, "cell": c, "reason": r, "message": m,
                 "payload": bytes(p)} for i, t, c, r, m, p in rows]

    # -- counts --------------------------------------------------------------------

    def counts(self, cell: str) -> dict[str, int]:
        """Rows the replica holds for one feed, per kind."""
        out = {}
        for kind, table in self.tables.items():
            out[kind] = self.conn.execute(
                f"SELECT count(*) FROM {table.name} WHERE {table.owner} = ?",
                (cell,)).fetchall()[0][0]
        return out

    # -- resync: stage out of sight, then swap in one commit ----------------------------

    def _staging(self, table: Table) -> str:
        return f"temp.staging_{table.name}"

    def stage_begin(self, cell: str | None = None) -> None:
        """Create (or empty) the TEMP staging tables. TEMP tables belong to this
        connection only: readers cannot see them, and they never reach the WAL.
        With ``cell``, the entity hashes the cell holds now are loaded, so that rows
        already right are neither rendered (see ``held_hash``) nor staged."""
        with self.conn:
            for table in self.tables.values():
                self.conn.execute(
                    f"CREATE TEMP TABLE IF NOT EXISTS staging_{table.name} AS "
                    f"SELECT * FROM main.{table.name} WHERE 0")
                self.conn.execute(f"DELETE FROM {self._staging(table)}")
            self._held = {kind: {} for kind in self.tables}
            self._held_cell = cell
            if cell is not None:
                for kind, table in self.tables.items():
                    self._held[kind] = dict(self.conn.execute(
                        f"SELECT {table.key}, entity_hash FROM {table.name} "
                        f"WHERE {table.owner} = ?", (cell,)))
        self._snapshot_keys = {kind: set() for kind in self.tables}
        self._staged_rows = 0
        self._staging_ready = True

    def held_hash(self, kind: str, key: str) -> int | None:
        """The entity hash of the row the cell given to ``stage_begin`` holds for this
        key (None: no row). An entity with that hash is right already: ``keep`` it
        instead of rendering and staging it."""
        return self._held[kind].get(key)

    def keep(self, kind: str, keys: Iterable[str]) -> None:
        """Snapshot entities whose rows are already right: the swap leaves them."""
        if not self._staging_ready:
            raise RuntimeError("keep: stage_begin was not called")
        self._snapshot_keys[kind].update(keys)

    def stage(self, kind: str, rows: Sequence[tuple]) -> None:
        """Rows of the snapshot (render tuples). Those equal to the held row (key and
        hash) are kept as they are, the others are staged for the swap."""
        if not self._staging_ready:
            raise RuntimeError("stage: stage_begin was not called")
        table = self.tables[kind]
        key_at, hash_at = self._key_at[kind], self._hash_at[kind]
        held, keys = self._held[kind], self._snapshot_keys[kind]
        changed = []
        for row in rows:
            key = row[key_at]
            keys.add(key)
            if held.get(key) != row[hash_at]:
                changed.append(row)
        if changed:
            with self.conn:
                self.conn.executemany(table.insert_sql(self._staging(table)), changed)
            self._staged_rows += len(changed)

    def staged_count(self) -> int:
        return sum(self.conn.execute(f"SELECT count(*) FROM {self._staging(t)}").fetchall()[0][0]
                   for t in self.tables.values())

    def swap(self, position: Position) -> dict[str, int]:
        """In one transaction: make the cell's rows equal the snapshot (staged rows
        plus kept ones) and set the cell's position. Returns the number of rows per
        kind now held.

        Rows whose key and entity hash are unchanged are left as they are (only what
        differs is written), which keeps the commit short when most of a cell is
        already right, the usual case of a resync. Such rows keep the seq of the event
        that last wrote them."""
        if not self._staging_ready:
            raise RuntimeError("swap: nothing staged")
        cell = position.cell
        cache_kib = min(SWAP_CACHE_KIB_MAX, WRITER_CACHE_KIB
                        + self._staged_rows * SWAP_CACHE_KIB_PER_ROW)
        if cache_kib > WRITER_CACHE_KIB:
            self.conn.execute(f"PRAGMA main.cache_size=-{cache_kib}")
        try:
            with self.conn:
                for kind, table in self.tables.items():
                    keys = self._snapshot_keys[kind]
                    if self._held_cell == cell:
                        # Only this cell's own events change its rows, and ingest holds
                        # them back during a resync: what stage_begin saw is still held
                        # (a key another feed took over meanwhile is no longer ours,
                        # and its delete below touches nothing).
                        held = self._held[kind].keys()
                    else:
                        held = [key for (key,) in self.conn.execute(
                            f"SELECT {table.key} FROM {table.name} WHERE {table.owner} = ?",
                            (cell,))]
                    gone = [(key, cell) for key in held if key not in keys]
                    if kind == self._usage_kind:
                        self._usage.apply_staged(self.conn, self._staging(table), gone)
                    if gone:
                        self.conn.executemany(self._delete_sql[kind], gone)
                    self.conn.execute(table.upsert_from_sql(self._staging(table)))
                self._write_positions([position], time.time())
        finally:
            if cache_kib > WRITER_CACHE_KIB:
                self.conn.execute(f"PRAGMA main.cache_size=-{WRITER_CACHE_KIB}")
        counts = self.counts(cell)
        self.stage_discard()
        return counts

    def stage_discard(self) -> None:
        if not self._staging_ready:
            return
        with self.conn:
            for table in self.tables.values():
                self.conn.execute(f"DELETE FROM {self._staging(table)}")
        self._held, self._held_cell, self._snapshot_keys, self._staged_rows = {}, None, {}, 0
        self._staging_ready = False

    # -- drift digests -------------------------------------------------------------

    def digests(self, cell: str) -> list[list[int]]:
        """Per bucket [count, sum of entity_hash] over every row the cell owns, both kinds,
        the same shape as the cell's "digest" reply."""
        buckets = [[0, 0] for _ in range(DIGEST_BUCKETS)]
        for table in self.tables.values():
            rows = self.conn.execute(
                f"SELECT bucket, count(*), sum(entity_hash) FROM {table.name} "
                f"WHERE {table.owner} = ? GROUP BY bucket", (cell,)).fetchall()
            for bucket, count, total in rows:
                buckets[bucket][0] += count
                buckets[bucket][1] += total or 0
        return buckets

    def existing(self, cell: str, keys: Sequence[str]) -> set[str]:
        """Which of ``keys`` the cell has a row for (either kind)."""
        found: set[str] = set()
        for table in self.tables.values():
            for i in range(0, len(keys), 500):
                chunk = list(keys[i:i + 500])
                marks = ", ".join("?" * len(chunk))
                found.update(k for (k,) in self.conn.execute(
                    f"SELECT {table.key} FROM {table.name} WHERE {table.owner} = ? "
                    f"AND {table.key} IN ({marks})", [cell, *chunk]))
        return found

    def bucket_entities(self, cell: str, bucket: int) -> dict[str, tuple[str, int, int]]:
        """{key: (kind, entity_hash, seq)} of one bucket of one cell."""
        out = {}
        for kind, table in self.tables.items():
            rows = self.conn.execute(
                f"SELECT {table.key}, entity_hash, seq FROM {table.name} "
                f"WHERE {table.owner} = ? AND bucket = ?", (cell, bucket)).fetchall()
            for key, ehash, seq in rows:
                out[key] = (kind, ehash, seq)
        return out
