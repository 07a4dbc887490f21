"""How every replica connection is opened: small named setup steps, one writer,
read-only readers. Open connections in the process that uses them, after any fork."""

from __future__ import annotations

import ctypes
import os

import apsw

from replica.store import schema

MMAP_BYTES = 1 << 30           # the writer maps up to 1 GiB of the database
WAL_SIZE_LIMIT_BYTES = 64 << 20   # the WAL file is cut back to this when it starts over
WAL_RESTART_BYTES = 16 << 20      # a WAL holding more is made to start over (ingest)
DB_CHUNK_BYTES = 8 << 20          # the checkpointer grows the database file this much at once
WAL_FRAME_HEADER_BYTES = 24       # each page in the WAL is preceded by this header
PAGE_SIZE = 16384              # bytes per database page, for new replica files
BUSY_TIMEOUT_MS = 5000
READ_DEADLINE_VM_STEPS = 1000  # progress handler granularity for reader deadlines
READER_CACHE_KIB = 16384       # a reader's page cache (SQLite's default: 2 MiB)
_reader_map_bytes = 0          # bytes of the replica a reader maps (set_reader_map_bytes)


def _page_size(conn: apsw.Connection) -> None:
    # Takes effect only when the file is created. A server row is 3-4 KB: with 4 KiB
    # pages nearly every row spills into an overflow page, which costs a read an extra
    # page lookup and the file a third more space (measured: 8.7 vs 11.8 us per point
    # read, 3.0 vs 4.4 KB per server).
    conn.execute(f"PRAGMA page_size={PAGE_SIZE}")


def _wal(conn: apsw.Connection) -> None:
    conn.execute("PRAGMA journal_mode=WAL")


def _normal_sync(conn: apsw.Connection) -> None:
    conn.execute("PRAGMA synchronous=NORMAL")


def _no_auto_checkpoint(conn: apsw.Connection) -> None:
    # An automatic checkpoint inside COMMIT stalls the writer on fdatasync under read
    # load; the writer checkpoints in the background instead (checkpoint_passive).
    conn.execute("PRAGMA wal_autocheckpoint=0")


def _mmap(conn: apsw.Connection) -> None:
    conn.execute(f"PRAGMA mmap_size={MMAP_BYTES}")


def _wal_size_limit(conn: apsw.Connection) -> None:
    # The WAL starts over from its beginning once a checkpoint has copied all of it
    # back; without a limit the file keeps the size of its biggest moment (a resync's
    # swap writes hundreds of megabytes) forever.
    conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}")


def _busy(conn: apsw.Connection) -> None:
    conn.set_busy_timeout(BUSY_TIMEOUT_MS)


def _foreign_keys(conn: apsw.Connection) -> None:
    conn.execute("PRAGMA foreign_keys=ON")


def _reader_cache(conn: apsw.Connection) -> None:
    # A detail?limit=1000 page reads about a thousand rows scattered over the table (one
    # 16 KiB page each): with SQLite's default 2 MiB cache every such request read them
    # all again from the OS (pread64 was half a worker's busy time; the statement took
    # 6.0 ms of CPU with 2 MiB, 4.5 ms with 12 MiB, 1.8 ms with 16 MiB). The cache only
    # grows as pages are used: a worker measured 54 MB RSS after a read load on 10,000
    # servers with it and the reader's kept list pages (36 MB before both; budget 60).
    conn.execute(f"PRAGMA cache_size=-{READER_CACHE_KIB}")


def _plans_without_values(conn: apsw.Connection) -> None:
    # apsw's SQLite is built with STAT4: a statement whose parameter is compared with an
    # indexed column (or is its LIMIT) is compiled again at its first step after every
    # new binding, so that the planner may use the value (sqlite3_prepare_v2's docs),
    # and apsw binds anew on every run: each such read paid a prepare (measured on a
    # small replica: a key pair list 34 us, 10 us without; a 3-hypervisor page 175 us,
    # 12 us; a server's empty instance action list 132 us, 8.5 us; the replica has no
    # sqlite_stat4 for values to matter). The query planner stability guarantee keeps
    # the plan the statement was prepared with.
    conn.config(apsw.SQLITE_DBCONFIG_ENABLE_QPSG, 1)


def set_reader_map_bytes(size: int) -> None:
    """Readers opened from now on in this process map up to ``size`` bytes of the
    replica (0: none, as by default; a worker sets it once, at start, from the
    ``reader_map_bytes`` setting)."""
    global _reader_map_bytes
    if size < 0:
        raise ValueError(f"reader map size {size} is negative")
    _reader_map_bytes = size


def _reader_map(conn: apsw.Connection) -> None:
    # Off by default: see READER_SETUP. On a large replica a read reaches rows spread
    # over the whole file; a mapped page is used where it lies instead of being copied
    # into the reader's cache by a pread, but the first touch of each of its 4 KiB pages
    # by a worker is a page fault. Measured (bench/README.md, reader_map_bytes): on
    # 1,000,000 servers a show got about 10 % cheaper mapped, detail?limit=1000 about
    # 10 % dearer (likely: a thousand rows' pages, mostly new to the worker, faulted in).
    if _reader_map_bytes:
        conn.execute(f"PRAGMA mmap_size={_reader_map_bytes}")


WRITER_SETUP = (_busy, _page_size, _wal, _normal_sync, _no_auto_checkpoint, _wal_size_limit,
                _mmap, _foreign_keys)
# Readers do not map the file unless told to (the reader_map_bytes setting). A mapping
# counts every replica page a worker has ever touched in its RSS (99 MiB per worker at
# 100,000 servers after the read benchmarks, against 33 MiB without; the budget is 60),
# though those pages are the OS's shared page cache, not the worker's own memory; and
# reads were no faster through it at 10,000-100,000 servers (GET /servers/{id} 0.74 x
# the constant body either way, detail?limit=100 within 5 %).
READER_SETUP = (_busy, _reader_cache, _plans_without_values, _reader_map)


def open_writer(path: str) -> apsw.Connection:
    """The single writer (ingest). Creates the database and migrates its schema."""
    conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE)
    for step in WRITER_SETUP:
        step(conn)
    schema.migrate(conn)
    return conn


def open_reader(path: str) -> apsw.Connection:
    """A read-only connection (API workers, admin, CLI). The database must exist."""
    conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    for step in READER_SETUP:
        step(conn)
    return conn


def checkpoint_passive(conn: apsw.Connection) -> tuple[int, int]:
    """Copy what the WAL holds back into the database without waiting for readers.
    Returns (frames in the WAL, frames copied back); the writer starts the WAL over at
    its next commit once all of it is copied (readers that begin after that read the
    database file alone, so they do not hold the WAL)."""
    # A connection that has not read yet has not opened the WAL: its checkpoint does
    # nothing at all and says (-1, -1).
    conn.execute("PRAGMA schema_version").fetchall()
    return conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_PASSIVE)


def grow_in_chunks(conn: apsw.Connection, chunk_bytes: int = DB_CHUNK_BYTES) -> None:
    """Let the checkpoints of ``conn`` grow (and cut back) its database file only in
    steps of ``chunk_bytes`` (SQLITE_FCNTL_CHUNK_SIZE). A checkpoint that copies the
    whole WAL sets the file's size and syncs it; a new size each time made that sync
    commit the filesystem's journal too, with ingest's writes held."""
    size = ctypes.c_int(chunk_bytes)
    conn.file_control("main", apsw.SQLITE_FCNTL_CHUNK_SIZE, ctypes.addressof(size))


def flush_to_disk(path: str) -> None:
    """fdatasync the replica file at ``path`` and its WAL, without any lock, while
    writes go on. A passive checkpoint that leaves frames behind does not sync the
    database file; the RESTART that copies the last ones does, so with ingest's writes
    held it waited for the disk to take everything the passive ones had copied since
    the last RESTART (seen with strace in the lag scenario: that fdatasync was most of
    each hold). Flushed just before, the RESTART's own syncs have little left."""
    for name in (path, path + "-wal"):
        try:
            fd = os.open(name, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)


def checkpoint_restart(conn: apsw.Connection) -> tuple[int, int]:
    """Copy all of the WAL back and wait (the connection's busy timeout) until no reader
    uses it, so that the next commit starts the WAL over from its beginning. Raises
    apsw.BusyError when a writer or a reader did not let go in time; what could be
    copied is copied all the same. The caller must hold the writes meanwhile: with a
    commit in every checkpoint the WAL is never all copied and never starts over."""
    conn.execute("PRAGMA schema_version").fetchall()
    return conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_RESTART)
