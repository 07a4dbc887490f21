"""Every write statement of the replica (ingest is the only caller).

Rows come from ``replica.render`` as tuples in the order of its column tuples; the
statements here are built from those tuples, so a column added to a table by a new
schema step and to the render is written without a change here.

Invariants kept by this module:
- a group of changes and the positions that cover them commit in ONE transaction;
- a resync is staged in TEMP tables (the writer connection's own, invisible to
  readers) and swapped in with one short transaction: readers see the old rows of
  the cell until that commit, then the new ones.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterable, Sequence

import apsw

from replica.feed import DIGEST_BUCKETS, KIND_FLAVOR, KIND_SERVER
from replica.position import Position

DEAD_LETTER_PAYLOAD_BYTES = 512   # enough to recognise a message, bounded per row
DEAD_LETTER_KEEP = 10_000         # the table keeps the newest rows only
DEAD_LETTER_MESSAGE_CHARS = 2000
WRITER_CACHE_KIB = 131_072        # index pages of a 100,000-server cell stay in memory


@dataclass(frozen=True, slots=True)
class Table:
    """How one entity kind maps to its replica table."""

    name: str
    key: str          # primary key column
    owner: str        # the column naming the feed that owns the row
    columns: tuple[str, ...]

    def insert_sql(self, target: str) -> str:
        names = ", ".join(self.columns)
        marks = ", ".join("?" * len(self.columns))
        return f"INSERT OR REPLACE INTO {target} ({names}) VALUES ({marks})"


@dataclass(frozen=True, slots=True)
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

    def __init__(self, conn: apsw.Connection, server_columns: Sequence[str],
                 flavor_columns: Sequence[str]):
        self.conn = conn
        self.tables = {
            KIND_SERVER: Table("servers", "uuid", "cell", tuple(server_columns)),
            KIND_FLAVOR: Table("flavors", "flavorid", "source", tuple(flavor_columns)),
        }
        for table in self.tables.values():
            for needed in (table.key, table.owner, "entity_hash", "bucket", "seq"):
                if needed not in table.columns:
                    raise ValueError(f"{table.name}: render columns lack {needed!r}")
        self._staging_ready = False
        # The writer's page cache decides upsert and swap speed (four indexes per row).
        conn.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}")

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

    # -- applying changes -----------------------------------------------------------

    def _write_changes(self, changes: Iterable[Change]) -> int:
        # Only the last change of an entity in a group matters (each carries the whole
        # entity); after collapsing, upserts and deletes touch distinct keys, so their
        # relative order no longer matters and each runs as one executemany.
        last: dict[tuple[str, str], Change] = {}
        count = 0
        for change in changes:
            key = (change.kind, change.key)
            last.pop(key, None)
            last[key] = change
            count += 1
        for kind, table in self.tables.items():
            upserts = [c.row for c in last.values() if c.kind == kind and c.row is not None]
            deletes = [(c.key, c.cell) for c in last.values() if c.kind == kind and c.row is None]
            if upserts:
                self.conn.executemany(table.insert_sql(table.name), upserts)
            if deletes:
                self.conn.executemany(
                    f"DELETE FROM {table.name} WHERE {table.key} = ? AND {table.owner} = ?",
                    deletes)
        return count

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

    def stage_begin(self) -> None:
        """Create (or empty) the TEMP staging tables. TEMP tables belong to this
        connection only: readers cannot see them, and they never reach the WAL."""
        with self.conn:
            for table in self.tables.values():
                self.conn.execute(
                    f"CREATE TEMP TABLE IF NOT EXISTS staging_{table.name} AS "
                    f"SELECT * FROM main.{table.name} WHERE 0")
                self.conn.execute(f"DELETE FROM {self._staging(table)}")
        self._staging_ready = True

    def stage(self, kind: str, rows: Sequence[tuple]) -> None:
        if not self._staging_ready:
            raise RuntimeError("stage: stage_begin was not called")
        table = self.tables[kind]
        with self.conn:
            self.conn.executemany(table.insert_sql(self._staging(table)), rows)

    def staged_count(self) -> int:
        return sum(self.conn.execute(f"SELECT count(*) FROM {self._staging(t)}").fetchall()[0][0]
                   for t in self.tables.values())

    def swap(self, position: Position) -> dict[str, int]:
        """In one transaction: make the cell's rows equal the staged rows and set the
        cell's position. Returns the number of rows per kind now held.

        Rows whose key and entity hash are unchanged are left as they are (only what
        differs is written), which keeps the commit short when most of a cell is
        already right, the usual case of a resync. Such rows keep the seq of the event
        that last wrote them."""
        if not self._staging_ready:
            raise RuntimeError("swap: nothing staged")
        cell = position.cell
        with self.conn:
            for table in self.tables.values():
                staging = self._staging(table)
                names = ", ".join(table.columns)
                self.conn.execute(
                    f"DELETE FROM {table.name} WHERE {table.owner} = ? AND {table.key} "
                    f"NOT IN (SELECT {table.key} FROM {staging})", (cell,))
                self.conn.execute(
                    f"INSERT OR REPLACE INTO {table.name} ({names}) SELECT {names} "
                    f"FROM {staging} AS s WHERE NOT EXISTS (SELECT 1 FROM {table.name} AS m "
                    f"WHERE m.{table.key} = s.{table.key} AND m.{table.owner} = s.{table.owner} "
                    f"AND m.entity_hash = s.entity_hash)")
            self._write_positions([position], time.time())
        counts = self.counts(cell)
        self.stage_discard()
        return counts

    def stage_discard(self) -> None:
        if not self._staging_ready:
            return
        with self.conn:
            for table in self.tables.values():
                self.conn.execute(f"DELETE FROM {self._staging(table)}")
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
