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
import time
import uuid as uuidlib
from dataclasses import dataclass

import apsw

from replica.cell import connection, entity, outbox, watcher
from replica.cell.rechecks import LivenessWatch, SecurityGroupWatch, ZoneWatch
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


@dataclass(frozen=True)
class ServerOptions:
    """What a cell's server entities read beyond the cell database (see
    ``entity.Reach``): Nova's API database, the liveness rule, Neutron."""
    api_db: str | None = None               # Nova's API database (SQLite file)
    service_down_time: float = 0.0          # 0: no liveness rule (a service row is UP)
    neutron_url: str | None = None          # security group names from Neutron
    neutron_token: str | None = None
    quota_defaults: tuple | None = None     # (resource, limit) pairs from nova.conf


class SqliteEntityReader:
    """The ``EntityReader`` of a SQLite cell database (or flavor source), and of
    Nova's API database beside it when ``api`` is given (read in the same view)."""

    def __init__(self, conn: apsw.Connection, api: apsw.Connection | None = None,
                 options: ServerOptions = ServerOptions(), neutron=None):
        self.conn = conn
        self.api = api
        self.db = SqliteRows(conn)
        tables = _tables_and_columns(conn)
        self._kinds = entity.kinds_in(tables)
        extra: dict = {"service_down_time": options.service_down_time,
                       "quota_defaults": options.quota_defaults}
        if api is not None:
            api_tables = _tables_and_columns(api)
            extra["api"] = SqliteRows(api).rows
            extra["api_children"] = entity.children_available(
                lambda table, column: column in api_tables.get(table, ()))
        if neutron is not None:
            extra["security_groups"] = neutron.names
        if entity.has_build_requests(tables):
            extra["build_requests"] = True
        self.children = entity.Reach(entity.children_available(
            lambda table, column: column in tables.get(table, ())), **extra)

    def read_view(self):
        return _ReadTransaction(self.conn, self.api)

    def build(self, kind: str, keys: list[str]) -> dict[str, dict | None]:
        if kind not in self._kinds:
            # A change log may name keys of a kind this database does not publish
            # (Nova's API database records its servers' request specs): no entity
            # here. A tombstone from this feed removes nothing (rows are owned by
            # the feed that published them).
            return {key: None for key in keys}
        return entity.build(self.db, kind, keys, self.children)

    def count(self, kinds: list[str]) -> int:
        return entity.count_entities(self.db, kinds, self.children)

    def page_entities(self, kinds, after, limit):
        return entity.page_entities(self.db, kinds, after, limit, self.children)

    def iter_entities(self, kinds, page: int = entity.PAGE):
        return entity.iter_entities(self.db, kinds, page, self.children)

    def kinds(self) -> list[str]:
        return list(self._kinds)

    def close(self) -> None:
        pass        # the connections are the source's


class _ReadTransaction:
    """BEGIN (deferred: the first read fixes the state) ... ROLLBACK, on the cell
    database and on the API database beside it."""

    def __init__(self, conn: apsw.Connection, api: apsw.Connection | None = None):
        self.conns = (conn,) if api is None else (conn, api)

    def __enter__(self):
        for conn in self.conns:
            if conn.in_transaction:     # left open by a failure: start clean
                conn.execute("ROLLBACK")
            conn.execute("BEGIN")
        return None

    def __exit__(self, *exc):
        for conn in self.conns:
            if conn.in_transaction:
                conn.execute("ROLLBACK")   # nothing was written; ends the read snapshot
        return False


class SqliteCellSource(CellSource):
    """A SQLite cell database with the outbox installed, over one connection (and one
    to Nova's API database when ``options.api_db`` names it)."""

    errors = (apsw.Error,)

    def __init__(self, conn: apsw.Connection, name: str = "", path: str | None = None,
                 options: ServerOptions = ServerOptions(), api: apsw.Connection | None = None,
                 neutron=None):
        super().__init__(name, OutboxChangeLog(conn),
                         SqliteEntityReader(conn, api, options, neutron))
        self.conn = conn
        self.path = path
        self.options = options
        self.api = api
        self.neutron = neutron

    @classmethod
    def open(cls, path: str, name: str = "",
             options: ServerOptions = ServerOptions()) -> "SqliteCellSource":
        conn = connection.open_cell_reader(path)
        try:
            api = connection.open_cell_reader(options.api_db) if options.api_db else None
        except BaseException:
            conn.close()
            raise
        return cls(conn, name, path, options, api, neutron_of(options))

    def open_snapshot(self) -> HeldView:
        conn = connection.open_cell_reader(self.path)
        api = None
        try:
            if self.options.api_db:
                api = connection.open_cell_reader(self.options.api_db)
            conn.execute("BEGIN")
            changelog = OutboxChangeLog(conn)
            seq = changelog.head()          # this read fixes the snapshot
            epoch = changelog.epoch()
            if api is not None:
                api.execute("BEGIN")
                api.execute("SELECT count(*) FROM sqlite_master").fetchall()   # fixes it
            reader = SqliteEntityReader(conn, api, self.options, self.neutron)
            total = reader.count(self.kinds)
        except BaseException:
            conn.close()
            if api is not None:
                api.close()
            raise
        return HeldView(seq, epoch, total, reader, lambda: _end_view(conn, api))

    def close(self) -> None:
        super().close()
        self.conn.close()
        if self.api is not None:
            self.api.close()


def neutron_of(options: ServerOptions):
    if not options.neutron_url:
        return None
    from replica.cell.neutron import SecurityGroupNames
    return SecurityGroupNames(options.neutron_url, options.neutron_token)


def _end_view(conn: apsw.Connection, api: apsw.Connection | None = None) -> None:
    for each in (conn, api):
        if each is None:
            continue
        try:
            each.execute("ROLLBACK")
        except apsw.Error:
            pass
        each.close()


class SqlitePublishingSource(SqliteCellSource):
    """The publisher's own source: follows the database file (see the module
    docstring), wakes on its writes (inotify) and records what was published."""

    def __init__(self, path: str, name: str, options: ServerOptions = ServerOptions()):
        self.path = path
        self.name = name
        self.options = options
        self.neutron = neutron_of(options)
        self.carrier = None
        self.api = None
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
                api = None
                if self.options.api_db:
                    api = connection.open_cell_reader(self.options.api_db)
                CellSource.__init__(self, self.name, OutboxChangeLog(conn),
                                    SqliteEntityReader(conn, api, self.options, self.neutron))
            except BaseException:
                self._close(conn, files)
                raise
            self.api = api
            if before is not None and watcher.file_identity(path) == before:
                break
            self._close(conn, files)
            if attempt == OPEN_ATTEMPTS - 1:
                raise apsw.CantOpenError(f"{path}: replaced over and over while opening")
        self.conn, self.files = conn, files
        self.opened_epoch = epoch
        self.data_version = None
        self.carrier = ChangeCarrier(conn, self.api, self.options, self.neutron, self.path)

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

    def tick(self, look_now: bool) -> None:
        if self.carrier is not None:
            self.carrier.tick(look_now)

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
        self._close_databases()
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
        self._close_databases()

    def _close_databases(self) -> None:
        """Close the cell database and the API database, if open (the watch stays)."""
        if self.conn is not None:
            self._close(self.conn, self.files)
            self.conn = None
        if self.api is not None:
            self.api.close()
            self.api = None


CARRIED = "api_outbox"            # META row: the API outbox position carried so far
LIVENESS_RECHECK_SECONDS = 2.0     # hosts' liveness judged again this often
NEUTRON_RECHECK_SECONDS = 5.0      # security group names asked again this often
ZONES_RECHECK_SECONDS = 2.0        # the hosts' availability zones read again this often


class ChangeCarrier:
    """Changes that reach a server's entity without touching the cell database, put
    into the cell's outbox (so into its gapless seq) by the publisher:

    - Nova's API database: its outbox (``cell init`` on it, as for a flavor source)
      records ``('server', uuid)`` for request_specs, instance_group_member and
      instance_groups changes; the keys of this cell's instances are copied into the
      cell outbox, in one transaction with the API outbox position carried (META
      ``api_outbox``: epoch and seq). A first start, another API epoch or a position
      pruned away: carried from the API head on (what came before is in the
      entities read now) after enqueueing every server of the cell once when the
      history was lost.
    - liveness: every LIVENESS_RECHECK_SECONDS the compute services are judged with
      Nova's rule; the servers of a host whose status changed are enqueued.
    - Neutron: every NEUTRON_RECHECK_SECONDS the security group names of the live
      servers are asked again; the servers whose names changed are enqueued.
    - zones: every ZONES_RECHECK_SECONDS the hosts' availability zones are read from
      the API database's aggregates; the servers of a host whose zone changed are
      enqueued.
    """

    def __init__(self, conn, api, options: ServerOptions, neutron, path: str):
        self.conn, self.api, self.options, self.neutron, self.path = (
            conn, api, options, neutron, path)
        self.api_version = None
        self.api_missing_said = False
        rows = SqliteRows(conn).rows
        self.next_liveness = 0.0
        self.liveness = LivenessWatch(rows, options.service_down_time)
        self.next_neutron = 0.0
        self.security_groups = SecurityGroupWatch(rows, neutron) if neutron else None
        self.next_zones = 0.0
        self.zones = ZoneWatch(rows, SqliteRows(api).rows) if api is not None else None

    def tick(self, look_now: bool) -> None:
        now = time.monotonic()
        if self.api is not None:
            self._carry_api()
        if self.options.service_down_time > 0 and now >= self.next_liveness:
            self.next_liveness = now + LIVENESS_RECHECK_SECONDS
            self._recheck_liveness()
        if self.neutron is not None and now >= self.next_neutron:
            self.next_neutron = now + NEUTRON_RECHECK_SECONDS
            self._recheck_neutron()
        if self.zones is not None and now >= self.next_zones:
            self.next_zones = now + ZONES_RECHECK_SECONDS
            self._recheck_zones()

    def _enqueue(self, uuids: list[str], carried: str | None = None,
                 kind: str = "server") -> None:
        if not uuids and carried is None:
            return
        with self.conn:
            self.conn.executemany(
                f"INSERT INTO {outbox.OUTBOX} (kind, key, ts) VALUES (?, ?, "
                f"{outbox.NOW})", [(kind, u) for u in uuids])
            if carried is not None:
                self.conn.execute(f"INSERT INTO {outbox.META} (name, value) VALUES (?, ?) "
                                  "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                                  (CARRIED, carried))

    def _carry_api(self) -> None:
        version = self.api.execute("PRAGMA data_version").fetchone()[0]
        if version == self.api_version:
            return
        try:
            epoch = outbox.epoch_of(self.api)
        except (apsw.SQLError, LookupError):
            if not self.api_missing_said:
                log.warning("%s: no outbox in the API database %s (appliance cell init "
                            "--db it): its changes reach servers only with their next "
                            "cell change", self.path, self.options.api_db)
                self.api_missing_said = True
            self.api_version = version
            return
        row = self.conn.execute(f"SELECT value FROM {outbox.META} WHERE name = ?",
                                (CARRIED,)).fetchone()
        carried = json.loads(row[0]) if row else None
        head = outbox.outbox_head(self.api)
        if carried is None or carried.get("epoch") != epoch or carried["seq"] > head:
            self._enqueue([], json.dumps({"epoch": epoch, "seq": head}))
            self.api_version = version
            return
        after = carried["seq"]
        if outbox.outbox_oldest(self.api) > after + 1:       # history pruned away
            every = [u for (u,) in self.conn.execute("SELECT uuid FROM instances")]
            log.warning("%s: API outbox pruned past %d: every server enqueued", self.path,
                        after)
            self._enqueue(every, json.dumps({"epoch": epoch, "seq": head}))
            self.api_version = version
            return
        while True:
            events = outbox.read_events(self.api, after, 5000)
            if not events:
                break
            keys = sorted({key for _seq, kind, key in events if kind == "server"})
            mine = []
            for start in range(0, len(keys), 500):
                chunk = keys[start:start + 500]
                mine += [u for (u,) in self.conn.execute(
                    "SELECT uuid FROM instances WHERE uuid IN (%s)" % ",".join("?" * len(chunk)),
                    chunk)]
            after = events[-1][0]
            self._enqueue(sorted(mine), json.dumps({"epoch": epoch, "seq": after}))
        self.api_version = version

    def _recheck_liveness(self) -> None:
        self._enqueue(self.liveness.changed_servers())
        self._enqueue(self.liveness.changed_nodes, kind="hypervisor")

    def _recheck_neutron(self) -> None:
        self._enqueue(self.security_groups.changed_servers())

    def _recheck_zones(self) -> None:
        try:
            changed = self.zones.changed_servers()
        except apsw.SQLError:           # an API database without aggregates
            self.zones = None
            return
        self._enqueue(changed)


@dataclass
class SqliteOpener:
    """Opens the SQLite source at ``path`` (see ``source.SourceOpener``)."""
    path: str
    name: str = ""

    options: ServerOptions = ServerOptions()

    def __call__(self, publishing: bool = False) -> SqliteCellSource:
        if publishing:
            return SqlitePublishingSource(self.path, self.name, self.options)
        return SqliteCellSource.open(self.path, self.name, self.options)


def borrowed(conn: apsw.Connection, name: str = "") -> SqliteCellSource:
    """A source over a connection the caller owns (tests, tools): closing the source
    leaves the connection open."""
    return _Borrowed(conn, name)


class _Borrowed(SqliteCellSource):
    def close(self) -> None:
        pass
