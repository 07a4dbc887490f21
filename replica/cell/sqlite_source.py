"""The SQLite cell source: the outbox table (``outbox.py``) as the change log and the
cell's own tables as the entities (``entity.py``), read over one connection so that
the head and the entities of a read come from the same transaction.

The publisher's own source (``SqlitePublishingSource``) also follows the database
FILE. Another database under the same name (a restored backup moved over the file):
connections keep reading the file they opened, so it compares the path's (st_dev,
st_ino) with the opened file's when inotify reports a file created or moved in under
that name, and on every slow poll; on the same polls it checks that the epoch is
still the one it opened and that the outbox head has not gone back behind what was
published. When the file changed, the publisher lets go of it everywhere and the
source opens the path again: it removes the old file's ``-wal`` and ``-shm`` if they
are still there (SQLite leaves them when the database was moved away, and a new
database opened next to them would take their pages for its own) and goes on from
the new file's head with its epoch. A file with the same epoch but an outbox that
went back (an older copy of the same cell) would reuse seqs for other changes, so it
is given a new epoch. The cell's own writers must be stopped while the file is
replaced: SQLite cannot keep apart two databases that share one ``-wal``.

What was published, across restarts: a publisher started on an older copy of its
cell (a restored backup, the same epoch) would publish seqs that were published
already for other changes, and a replica would take them for duplicates. The last
(epoch, seq) published is kept in a small file beside the database
(``<db>.published``), written at every heartbeat and at exit; a head behind it at
start means a new epoch (every replica then resyncs).
"""

from __future__ import annotations

import json
import logging
import os
import uuid as uuidlib
from dataclasses import dataclass

import apsw

from replica.cell import connection, entity, outbox, watcher
from replica.cell.source import CellSource, HeldView

log = logging.getLogger("replica.cell.sqlite_source")

OPEN_ATTEMPTS = 3               # the file replaced while it was being opened: again
SIDE_FILES = ("-wal", "-shm")   # what SQLite keeps next to a WAL database
PUBLISHED_SUFFIX = ".published"  # beside the database: the last (epoch, seq) published


class SqliteRows:
    """``entity.Rows`` over an apsw connection."""

    __slots__ = ("conn",)

    def __init__(self, conn: apsw.Connection):
        self.conn = conn

    def rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        return self.conn.execute(sql, params).fetchall()


class OutboxChangeLog:
    """The ``ChangeLog`` of the outbox table: seq = outbox seq, epoch in the meta table."""

    prune_chunk = outbox.PRUNE_CHUNK

    def __init__(self, conn: apsw.Connection):
        self.conn = conn

    def epoch(self) -> str:
        return outbox.epoch_of(self.conn)

    def head(self) -> int:
        return outbox.outbox_head(self.conn)

    def oldest(self) -> int:
        return outbox.outbox_oldest(self.conn)

    def events_after(self, seq: int, limit: int) -> list[tuple[int, str, str]]:
        return outbox.read_events(self.conn, seq, limit)

    def last_changed(self, kind: str, keys: list[str]) -> dict[str, int]:
        return outbox.last_changed(self.conn, kind, keys)

    def prune(self, keep_events: int, keep_seconds: float) -> int:
        return outbox.prune(self.conn, keep_events, keep_seconds)

    def close(self) -> None:
        pass        # the connection is the source's


def _tables_and_columns(conn: apsw.Connection) -> dict[str, set[str]]:
    tables = [name for (name,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")]
    wanted = {table for needs in entity.CHILD_TABLES.values() for table, _c in needs}
    return {table: ({row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')}
                    if table in wanted else set())
            for table in tables}


def kinds_of(conn: apsw.Connection) -> list[str]:
    """The kinds a SQLite database publishes, in snapshot order (sorted)."""
    return entity.kinds_in(_tables_and_columns(conn))


class SqliteEntityReader:
    """The ``EntityReader`` of a SQLite cell database (or flavor source)."""

    def __init__(self, conn: apsw.Connection):
        self.conn = conn
        self.db = SqliteRows(conn)
        tables = _tables_and_columns(conn)
        self._kinds = entity.kinds_in(tables)
        self.children = entity.children_available(
            lambda table, column: column in tables.get(table, ()))

    def read_view(self):
        return _ReadTransaction(self.conn)

    def build(self, kind: str, keys: list[str]) -> dict[str, dict | None]:
        return entity.build(self.db, kind, keys, self.children)

    def count(self, kinds: list[str]) -> int:
        return entity.count_entities(self.db, kinds)

    def page_entities(self, kinds, after, limit):
        return entity.page_entities(self.db, kinds, after, limit, self.children)

    def iter_entities(self, kinds, page: int = entity.PAGE):
        return entity.iter_entities(self.db, kinds, page, self.children)

    def kinds(self) -> list[str]:
        return list(self._kinds)

    def close(self) -> None:
        pass        # the connection is the source's


class _ReadTransaction:
    """BEGIN (deferred: the first read fixes the state) ... ROLLBACK."""

    def __init__(self, conn: apsw.Connection):
        self.conn = conn

    def __enter__(self):
        if self.conn.in_transaction:     # left open by a failure: start clean
            self.conn.execute("ROLLBACK")
        self.conn.execute("BEGIN")
        return None

    def __exit__(self, *exc):
        self.conn.execute("ROLLBACK")   # nothing was written; ends the read snapshot
        return False


class SqliteCellSource(CellSource):
    """A SQLite cell database with the outbox installed, over one connection."""

    errors = (apsw.Error,)

    def __init__(self, conn: apsw.Connection, name: str = "", path: str | None = None):
        super().__init__(name, OutboxChangeLog(conn), SqliteEntityReader(conn))
        self.conn = conn
        self.path = path

    @classmethod
    def open(cls, path: str, name: str = "") -> "SqliteCellSource":
        return cls(connection.open_cell_reader(path), name, path)

    def open_snapshot(self) -> HeldView:
        conn = connection.open_cell_reader(self.path)
        try:
            conn.execute("BEGIN")
            changelog = OutboxChangeLog(conn)
            seq = changelog.head()          # this read fixes the snapshot
            epoch = changelog.epoch()
            reader = SqliteEntityReader(conn)
            total = reader.count(self.kinds)
        except BaseException:
            conn.close()
            raise
        return HeldView(seq, epoch, total, reader, lambda: _end_view(conn))

    def close(self) -> None:
        super().close()
        self.conn.close()


def _end_view(conn: apsw.Connection) -> None:
    try:
        conn.execute("ROLLBACK")
    except apsw.Error:
        pass
    conn.close()


class SqlitePublishingSource(SqliteCellSource):
    """The publisher's own source: follows the database file (see the module
    docstring), wakes on its writes (inotify) and records what was published."""

    def __init__(self, path: str, name: str):
        self.path = path
        self.name = name
        self.files: dict[str, tuple[int, int] | None] = {}   # suffix -> identity at open
        self.data_version = None
        self.watch: watcher.CommitWatcher | None = None      # made after the fork
        self.conn = None
        self._open()
        published = self._load_published()
        if published is not None and published[0] == self.opened_epoch \
                and self.changelog.head() < published[1]:
            # Restarted on an older copy of the cell: its seqs after its head were
            # published already, for other changes.
            self._renew_epoch(published[1])

    @property
    def ready(self) -> bool:
        return self.conn is not None

    def _open(self) -> None:
        """Open the file the path names now: connection, epoch, and the identities of
        the database and its side files (SQLite creates those when it opens a WAL
        database). Raises LookupError for a database without an outbox."""
        path = self.path
        for attempt in range(OPEN_ATTEMPTS):
            before = watcher.file_identity(path)
            conn = connection.open_cell(path)      # sets WAL + busy timeout
            files = {suffix: watcher.file_identity(path + suffix) for suffix in SIDE_FILES}
            files[""] = before
            try:
                try:
                    epoch = outbox.epoch_of(conn)
                except apsw.SQLError:
                    raise LookupError(f"{path}: no outbox installed (init_cell_db first)") \
                        from None
                CellSource.__init__(self, self.name, OutboxChangeLog(conn),
                                    SqliteEntityReader(conn))
            except BaseException:
                self._close(conn, files)
                raise
            if before is not None and watcher.file_identity(path) == before:
                break
            self._close(conn, files)
            if attempt == OPEN_ATTEMPTS - 1:
                raise apsw.CantOpenError(f"{path}: replaced over and over while opening")
        self.conn, self.files = conn, files
        self.opened_epoch = epoch
        self.data_version = None

    def _close(self, conn: apsw.Connection, files: dict) -> None:
        """Close a connection to the database; when the file was moved away meanwhile,
        remove the -wal and -shm it leaves behind. SQLite neither checkpoints nor
        removes them for a database that was moved (they might be another file's by
        now), and left there they would be read as the new file's own."""
        conn.close()
        if watcher.file_identity(self.path) == files[""]:
            return
        for suffix in SIDE_FILES:
            path = self.path + suffix
            if files.get(suffix) is not None and watcher.file_identity(path) == files[suffix]:
                try:
                    os.unlink(path)
                    log.info("removed %s of the replaced database", path)
                except FileNotFoundError:
                    pass

    # -- the publisher's hooks ----------------------------------------------

    def wait(self, timeout: float) -> None:
        if self.watch is None:
            self.watch = watcher.CommitWatcher(self.path)
            log.info("%s: watching for commits (inotify %s)", self.path, self.watch.native)
        self.watch.wait(timeout)    # returns early on writes and for re-checks after them

    def has_news(self) -> bool:
        version = self.conn.execute("PRAGMA data_version").fetchone()[0]
        if version == self.data_version:
            return False
        self.data_version = version
        return True

    def changed_identity(self, published: int, look_now: bool) -> str | None:
        replaced = self.watch is not None and self.watch.replaced()
        if not (replaced or look_now):
            return None
        now = watcher.file_identity(self.path)
        if now is None:
            return None      # gone (or being replaced right now): keep the open file
        if now != self.files[""]:
            return f"file replaced (inode {self.files[''][1]} -> {now[1]})"
        epoch = self.changelog.epoch()
        if epoch != self.opened_epoch:
            return f"epoch changed in place ({self.opened_epoch[:8]} -> {epoch[:8]})"
        head = self.changelog.head()
        if head < published:
            return f"outbox head went back from {published} to {head}"
        return None

    def reopen(self, published: int) -> None:
        old_epoch = getattr(self, "opened_epoch", None)
        if self.conn is not None:
            self._close(self.conn, self.files)
            self.conn = None
        self._open()
        if self.opened_epoch == old_epoch and self.changelog.head() < published:
            try:
                self._renew_epoch(published)
            except apsw.Error as exc:     # a busy cell: the same checks again next poll
                log.error("%s: cannot give the rewound outbox a new epoch: %s", self.path,
                          exc)
                self._close(self.conn, self.files)
                self.conn = None
                self.opened_epoch = old_epoch
                raise

    def _published_path(self) -> str:
        return self.path + PUBLISHED_SUFFIX

    def _load_published(self) -> tuple[str, int] | None:
        try:
            with open(self._published_path(), encoding="utf-8") as f:
                record = json.load(f)
            epoch, seq = record["epoch"], record["seq"]
            if not isinstance(epoch, str) or not isinstance(seq, int):
                raise ValueError("epoch / seq of the wrong type")
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("%s: unreadable, ignored: %s", self._published_path(), exc)
            return None
        return epoch, seq

    _saved: tuple[str, int] | None = None
    _save_failed = False

    def record_published(self, seq: int) -> None:
        """Record the last (epoch, seq) published, when it changed."""
        now = (self.opened_epoch, seq)
        if now == self._saved:
            return
        path = self._published_path()
        try:
            with open(path + ".tmp", "w", encoding="utf-8") as f:
                json.dump({"epoch": now[0], "seq": now[1]}, f)
            os.replace(path + ".tmp", path)
        except OSError as exc:
            if not self._save_failed:            # said once, tried at every heartbeat
                log.warning("%s: cannot record the published position: %s", path, exc)
                self._save_failed = True
            return
        self._save_failed = False
        self._saved = now

    def _renew_epoch(self, old_last: int) -> None:
        """The same epoch with an outbox behind what was published: seqs would be used
        again for other changes. A new epoch makes every replica resync."""
        epoch = uuidlib.uuid4().hex
        with self.conn:
            self.conn.execute(f"UPDATE {outbox.META} SET value = ? WHERE name = 'epoch'",
                              (epoch,))
        log.warning("%s: outbox head %d is behind the published %d with the same epoch "
                    "(an older copy of this cell?): new epoch %s", self.path,
                    self.changelog.head(), old_last, epoch)
        self.opened_epoch = epoch

    def close(self) -> None:
        if self.watch is not None:
            self.watch.close()
            self.watch = None
        if self.conn is not None:
            self._close(self.conn, self.files)
            self.conn = None


@dataclass
class SqliteOpener:
    """Opens the SQLite source at ``path`` (see ``source.SourceOpener``)."""
    path: str
    name: str = ""

    def __call__(self, publishing: bool = False) -> SqliteCellSource:
        if publishing:
            return SqlitePublishingSource(self.path, self.name)
        return SqliteCellSource.open(self.path, self.name)


def borrowed(conn: apsw.Connection, name: str = "") -> SqliteCellSource:
    """A source over a connection the caller owns (tests, tools): closing the source
    leaves the connection open."""
    return _Borrowed(conn, name)


class _Borrowed(SqliteCellSource):
    def close(self) -> None:
        pass
