"""The journal: the change log of a MariaDB/MySQL cell, a small SQLite file of the
publisher's own (``<state dir>/<cell>.journal``).

The binlog tailer (``binlog.py``) appends the entity keys that one source
transaction changed (or several whole source transactions that arrived together),
in ONE SQLite transaction together with the GTID position the journal has then
consumed. So the position is a value committed with the
changes it covers: after a crash the journal holds either all of a source
transaction's keys and the position after it, or none of them and the position
before it, and the tailer resumes from exactly there (nothing lost, nothing
doubled). Seqs are assigned here, ``head + 1 ...``, so they are gapless and
increase in commit order of the source (the binlog's order).

Tables: ``journal(seq, kind, key, gtid, ts)`` and the one-row ``journal_meta``:
``epoch``, ``server_identity`` (MySQL's server_uuid, MariaDB's server id),
``position`` (the GTID position consumed), ``verify_position`` and
``last_transaction`` (the position before the last recorded transaction and that
transaction's fingerprint, which the tailer re-reads from the binlog at start to
check that the server still has the history the journal was made from),
``head`` (the last seq, kept across pruning), ``created_at`` and
``epoch_reason``.

``JournalChangeLog`` is the ChangeLog of the source seam over this file
(``epoch/head/oldest/events_after/last_changed/prune/close``); it may live in
another process than the tailer (SQLite WAL: readers never wait for the writer).
"""

from __future__ import annotations

import time
import uuid as uuidlib
from dataclasses import dataclass
from typing import Iterable

import apsw

BUSY_TIMEOUT_MS = 5000
PRUNE_CHUNK = 50_000           # rows deleted per prune call: bounds the write lock
SQLITE_VARIABLES = 500         # keys per IN (...) of last_changed

SCHEMA = (
    # version 1
    (
        """CREATE TABLE journal (
            seq INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,
            key TEXT NOT NULL,
            gtid TEXT,
            ts REAL NOT NULL
        )""",
        "CREATE INDEX journal_key_idx ON journal (kind, key)",
        # One row: what the journal is a log of and how far it has read.
        """CREATE TABLE journal_meta (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            epoch TEXT NOT NULL,
            server_identity TEXT NOT NULL,
            position TEXT NOT NULL,
            verify_position TEXT NOT NULL,
            last_transaction TEXT NOT NULL,
            head INTEGER NOT NULL,
            created_at REAL NOT NULL,
            epoch_reason TEXT NOT NULL
        )""",
    ),
)
STATE_COLUMNS = ("epoch", "server_identity", "position", "verify_position", "last_transaction",
                 "head", "created_at")


class JournalError(RuntimeError):
    pass


@dataclass(frozen=True)
class JournalState:
    epoch: str
    server_identity: str
    position: str                  # GTID position after the last consumed transaction
    verify_position: str           # the position before the last recorded transaction
    last_transaction: str          # that transaction's fingerprint ("" when none yet)
    head: int
    created_at: float


def _setup(conn: apsw.Connection) -> None:
    conn.set_busy_timeout(BUSY_TIMEOUT_MS)
    conn.execute("PRAGMA journal_mode=WAL")
    # Durable against a killed process (what the tailer's restart relies on); a
    # power loss may lose the last transactions, which are then read again from
    # the binlog and get the same seqs again (the feed's events are idempotent).
    conn.execute("PRAGMA synchronous=NORMAL")


def _migrate(conn: apsw.Connection) -> None:
    with conn:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for number, statements in enumerate(SCHEMA[version:], start=version + 1):
            for statement in statements:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version={number}")


def connect(path: str) -> apsw.Connection:
    """A connection to the journal file at ``path``, created (with its schema) if absent."""
    conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE)
    _setup(conn)
    _migrate(conn)
    return conn


def read_state(conn: apsw.Connection) -> JournalState | None:
    row = conn.execute(f"SELECT {', '.join(STATE_COLUMNS)} FROM journal_meta").fetchone()
    return JournalState(*row) if row else None


def epoch_reason(conn: apsw.Connection) -> str | None:
    """Why the current epoch was started (first attach, binlog purged, ...)."""
    row = conn.execute("SELECT epoch_reason FROM journal_meta").fetchone()
    return row[0] if row else None


class Journal:
    """The writer side, used by the tailer only (one writer per journal file)."""

    def __init__(self, path: str):
        self.path = path
        self.conn = connect(path)
        state = self.state()
        self.head = state.head if state else None     # the one writer keeps it

    def close(self) -> None:
        self.conn.close()

    def state(self) -> JournalState | None:
        return read_state(self.conn)

    def new_epoch(self, server_identity: str, position: str, reason: str) -> JournalState:
        """Start over: a new random epoch, no events, seq back to 0, consuming from
        ``position`` (the server's current one). Returns the new state."""
        with self.conn:
            self.conn.execute("DELETE FROM journal")
            self.conn.execute("DELETE FROM journal_meta")
            self.conn.execute(
                "INSERT INTO journal_meta (id, epoch, server_identity, position, verify_position, "
                "last_transaction, head, created_at, epoch_reason) "
                "VALUES (1, ?, ?, ?, ?, '', 0, ?, ?)",
                (uuidlib.uuid4().hex, server_identity, position, position, time.time(), reason))
            self.head = 0
        return self.state()

    def append(self, keys: Iterable[tuple[str, str]], gtid: str, position: str,
               verify_position: str, last_transaction: str) -> tuple[int, int]:
        """Append one source transaction: its changed keys (each once, in first-seen
        order) and the position after it, in one SQLite transaction. Returns the
        (first, last) seqs given; (head + 1, head) when the transaction changed no key."""
        return self.append_transactions([(keys, gtid)], position, verify_position,
                                        last_transaction)

    def append_transactions(self, transactions: Iterable[tuple[Iterable[tuple[str, str]], str]],
                            position: str, verify_position: str,
                            last_transaction: str) -> tuple[int, int]:
        """Append several whole source transactions, ``(keys, gtid)`` each in binlog
        order, and the position after the last one, in ONE SQLite transaction (one
        commit for a group of source transactions that arrived together). Each
        transaction's keys are written once each, in first-seen order, with its own
        GTID, exactly as ``append`` would write them one by one; ``verify_position``
        and ``last_transaction`` are those of the last transaction. Returns the
        (first, last) seqs given."""
        return self._append([(gtid, list(dict.fromkeys(keys))) for keys, gtid in transactions],
                            ", position = ?, verify_position = ?, last_transaction = ?",
                            (position, verify_position, last_transaction))

    def append_keys(self, keys: Iterable[tuple[str, str]]) -> tuple[int, int]:
        """Append keys that no source transaction changed (a service whose last
        report grew too old): the position stays as it is."""
        return self._append([(None, list(dict.fromkeys(keys)))], "", ())

    def _append(self, groups: list[tuple[str | None, list[tuple[str, str]]]],
                meta_assignments: str, meta_values: tuple) -> tuple[int, int]:
        """Write each group's keys (gtid, unique keys) after the head and move the
        head past them, with the further ``journal_meta`` assignments (a fixed SQL
        fragment from this class, values bound), in one SQLite transaction."""
        head = self.head
        if head is None:
            raise JournalError(f"journal {self.path}: no epoch started")
        now = time.time()
        rows = []
        seq = head
        for gtid, unique in groups:
            for kind, key in unique:
                seq += 1
                rows.append((seq, kind, key, gtid, now))
        with self.conn:
            if rows:
                self.conn.executemany(
                    "INSERT INTO journal (seq, kind, key, gtid, ts) VALUES (?, ?, ?, ?, ?)",
                    rows)
            self.conn.execute("UPDATE journal_meta SET head = ?" + meta_assignments,
                              (seq, *meta_values))
        self.head = seq
        return head + 1, seq


class JournalChangeLog:
    """The ChangeLog of the source seam over a journal file."""

    prune_chunk = PRUNE_CHUNK

    def __init__(self, path: str):
        self.path = path
        self.conn = connect(path)

    def close(self) -> None:
        self.conn.close()

    def _meta_value(self, name: str):
        row = self.conn.execute(f"SELECT {name} FROM journal_meta").fetchone()
        if row is None:
            raise JournalError(f"journal {self.path}: no epoch started")
        return row[0]

    def state(self) -> JournalState | None:
        return read_state(self.conn)

    def epoch(self) -> str:
        return self._meta_value("epoch")

    def head(self) -> int:
        """The last seq ever given in this epoch (0 before the first); survives pruning."""
        return int(self._meta_value("head"))

    def oldest(self) -> int:
        """The oldest seq still replayable; ``head + 1`` when none is retained."""
        with self.conn:     # one read transaction: min(seq) and head agree
            row = self.conn.execute("SELECT min(seq) FROM journal").fetchone()
            if row[0] is not None:
                return int(row[0])
            return self.head() + 1

    def events_after(self, seq: int, limit: int) -> list[tuple[int, str, str]]:
        """``(seq, kind, key)`` with seq > ``seq``, in order, at most ``limit``."""
        return self.conn.execute("SELECT seq, kind, key FROM journal WHERE seq > ? "
                                 "ORDER BY seq LIMIT ?", (seq, limit)).fetchall()

    def last_changed(self, kind: str, keys: list[str]) -> dict[str, int]:
        """The seq of the latest retained event for each key (absent: older)."""
        found: dict[str, int] = {}
        for start in range(0, len(keys), SQLITE_VARIABLES):
            chunk = keys[start:start + SQLITE_VARIABLES]
            marks = ", ".join("?" * len(chunk))
            for key, seq in self.conn.execute(
                    f"SELECT key, max(seq) FROM journal WHERE kind = ? AND key IN ({marks}) "
                    "GROUP BY key", (kind, *chunk)):
                found[key] = seq
        return found

    def prune(self, keep_events: int, keep_seconds: float) -> int:
        """Delete the oldest events beyond retention; returns how many went. An event
        is kept while it is among the newest ``keep_events`` AND younger than
        ``keep_seconds``; only a prefix goes, at most PRUNE_CHUNK rows per call."""
        with self.conn:
            head = int(self._meta_value("head"))
            cutoff = time.time() - keep_seconds
            upto = head - max(0, keep_events)
            for seq, ts in self.conn.execute("SELECT seq, ts FROM journal WHERE seq > ? "
                                             "ORDER BY seq LIMIT ?", (upto, PRUNE_CHUNK)):
                if ts >= cutoff:
                    break
                upto = seq
            row = self.conn.execute("SELECT min(seq) FROM journal").fetchone()
            if row[0] is None:
                return 0
            upto = min(upto, int(row[0]) - 1 + PRUNE_CHUNK)
            if upto < row[0]:
                return 0
            self.conn.execute("DELETE FROM journal WHERE seq <= ?", (upto,))
            return self.conn.changes()
