"""How the cell side opens a cell database: WAL (so the publisher's reads and
snapshots never block the cell's writers) and a busy timeout (so the publisher's
own small writes, pruning the outbox, wait for the cell's writers instead of
failing). Open connections in the process and thread that use them."""

from __future__ import annotations

import apsw

BUSY_TIMEOUT_MS = 5000
# Prepared statements kept per connection: entity building uses a few IN-list
# lengths of each of its queries (see entity._IN_LENGTHS).
STATEMENT_CACHE = 256


def _busy(conn: apsw.Connection) -> None:
    conn.set_busy_timeout(BUSY_TIMEOUT_MS)


def _wal(conn: apsw.Connection) -> None:
    conn.execute("PRAGMA journal_mode=WAL")


def _normal_sync(conn: apsw.Connection) -> None:
    # WAL with synchronous=NORMAL is durable against process crashes, which is
    # what a simulated cell needs; a real cell keeps its own setting.
    conn.execute("PRAGMA synchronous=NORMAL")


MMAP_BYTES = 1 << 30


def _mmap(conn: apsw.Connection) -> None:
    # Building entities reads child rows scattered over the tables: through the OS's
    # page mapping, not a copy into SQLite's cache per page (about 12 % of a snapshot
    # page's CPU). SQLite re-checks the file size per transaction, so a file that
    # shrinks under the mapping is handled.
    conn.execute(f"PRAGMA mmap_size={MMAP_BYTES}")


WRITER_SETUP = (_busy, _wal, _normal_sync)
READER_SETUP = (_busy, _mmap)


def open_cell(path: str, create: bool = False) -> apsw.Connection:
    """A read-write connection to a cell database (or flavor source)."""
    flags = apsw.SQLITE_OPEN_READWRITE | (apsw.SQLITE_OPEN_CREATE if create else 0)
    conn = apsw.Connection(path, flags=flags, statementcachesize=STATEMENT_CACHE)
    for step in WRITER_SETUP:
        step(conn)
    return conn


def open_cell_reader(path: str) -> apsw.Connection:
    """A connection used only to read (tailing, snapshots, digests). Opened
    read-write so that it can take part in WAL recovery, but it never writes."""
    conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READWRITE,
                           statementcachesize=STATEMENT_CACHE)
    for step in READER_SETUP:
        step(conn)
    return conn
