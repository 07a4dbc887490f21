"""The MariaDB/MySQL cell source: the journal (``journal.py``, filled from the binlog
by ``binlog.py``'s tailer) as the change log and Nova's own databases, read through
PyMySQL (``mysql.py``), as the entities (``entity.py``'s portable builder).

Parts, and who opens them:

- the publisher's own source (``MysqlPublishingSource``): reconciles the journal
  with the server first (``binlog.open_change_log``: the epoch is decided before
  anything is served), forks the tailer (``binlog.TailerProcess``; before the
  publisher opens sockets or threads), wakes on the journal's commits (inotify on
  its WAL, ``watcher.CommitWatcher``), starts the tailer again when it dies (exit
  code 2: a setting that cannot work; the publisher halts with that error) and
  watches the journal's epoch: the tailer starts a new one when the server's
  history is not the journal's any more (a restored database, a purged binlog);
  the publisher then publishes the new epoch and every replica resyncs;
- the control server's and the pruner's (``MysqlCellSource``): the journal file
  (``JournalChangeLog``) and connections of their own.

Epochs are bound to what was opened: the change log of a source answers only for
the epoch it was opened with (``EpochBoundChangeLog``): a journal that has a new
epoch meanwhile is an error until the source is opened again, so no event of one
epoch ever goes out labelled with another.

A server's key that another cell owns (API database rows name servers of every
cell) is not journaled at all (``binlog_keys``); were one published, its tombstone
would remove nothing (the replica deletes a key only for the cell that owns it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time

import apsw
import pymysql

from replica import feed
from replica.cell import binlog, binlog_keys, entity, journal, mysql, neutron, watcher
from replica.cell.source import CellSource, HeldView

log = logging.getLogger("replica.cell.mysql_source")

# Tables whose columns decide which server children the builder reads.
_CHILD_TABLES = sorted({table for needs in entity.CHILD_TABLES.values() for table, _c in needs})


class EpochChanged(journal.JournalError):
    """The journal has another epoch than the one this source was opened with."""


class EpochBoundChangeLog(journal.JournalChangeLog):
    """The journal's change log, answering only for the epoch it was opened with."""

    def __init__(self, path: str):
        super().__init__(path)
        self.opened_epoch = super().epoch()

    def current_epoch(self) -> str:
        return super().epoch()

    def epoch(self) -> str:
        return self.opened_epoch

    def _check(self) -> None:
        now = self.current_epoch()
        if now != self.opened_epoch:
            raise EpochChanged(f"journal {self.path}: epoch {self.opened_epoch[:8]} -> "
                               f"{now[:8]}")

    def head(self) -> int:
        with self.conn:             # one read: the epoch and the head agree
            self._check()
            return super().head()

    def oldest(self) -> int:
        with self.conn:
            self._check()
            return super().oldest()

    def events_after(self, seq: int, limit: int) -> list[tuple[int, str, str]]:
        with self.conn:
            self._check()
            return super().events_after(seq, limit)

    def last_changed(self, kind: str, keys: list[str]) -> dict[str, int]:
        with self.conn:
            self._check()
            return super().last_changed(kind, keys)


def _children_of(rows: mysql.Rows, database: str) -> frozenset[str]:
    marks = ", ".join("?" * len(_CHILD_TABLES))
    have = {(table, column) for table, column in rows(
        "SELECT table_name, column_name FROM information_schema.columns "
        f"WHERE table_schema = ? AND table_name IN ({marks})", (database, *_CHILD_TABLES))}
    return entity.children_available(lambda table, column: (table, column) in have)


_CONNECTION_LOST = (pymysql.err.OperationalError, pymysql.err.InterfaceError)


class MysqlEntityReader:
    """The ``EntityReader`` of a MariaDB/MySQL source: the portable builder over the
    cell database's rows adapter (and the API database's where the builder takes
    one). A flavor source reads the API database as its "cell" rows. Connections
    are made at the first read and again after one failed (a restarted server)."""

    def __init__(self, cell_url: mysql.MySQLURL, api_url: mysql.MySQLURL | None,
                 kinds: tuple[str, ...], service_down_time: float = binlog_keys.SERVICE_DOWN_TIME_S,
                 security_groups=None, build_requests: bool = False,
                 quota_defaults: tuple | None = None):
        self.cell_url, self.api_url = cell_url, api_url
        self._kinds = sorted(kinds)
        self.service_down_time = service_down_time
        self.security_groups = security_groups      # neutron.SecurityGroupNames.names
        self.build_requests = build_requests        # the API database: its build requests
        self.quota_defaults = quota_defaults        # nova.conf's, for the quota kind
        self.dbs: mysql.SourceDatabases | None = None
        self.children: frozenset[str] = entity.ALL_CHILDREN

    def _open(self) -> mysql.SourceDatabases:
        if self.dbs is None:
            dbs = mysql.SourceDatabases(self.cell_url, self.api_url)
            try:
                if feed.KIND_SERVER in self._kinds and self.build_requests:
                    self.children = entity.Reach(frozenset(), build_requests=True)
                elif feed.KIND_SERVER in self._kinds:
                    extra = {"service_down_time": self.service_down_time}
                    if self.security_groups is not None:
                        extra["security_groups"] = self.security_groups
                    if dbs.api_rows is not None:    # server groups, request specs
                        extra["api"] = dbs.api_rows
                        extra["api_children"] = _children_of(dbs.api_rows,
                                                             self.api_url.database)
                    self.children = entity.Reach(
                        _children_of(dbs.cell_rows, self.cell_url.database), **extra)
                if self.quota_defaults is not None:
                    self.children = entity.Reach(
                        self.children, **{**getattr(self.children, "__dict__", {}),
                                          "quota_defaults": self.quota_defaults})
            except BaseException:
                dbs.close()
                raise
            self.dbs = dbs
        return self.dbs

    @property
    def cell_rows(self) -> mysql.Rows:
        return self._open().cell_rows

    @property
    def api_rows(self) -> mysql.Rows | None:
        return self._open().api_rows

    @contextlib.contextmanager
    def read_view(self, at_entry: bool = False):
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(self._open().read_view(at_entry=at_entry))
            except _CONNECTION_LOST:
                # Connections broken while idle (a restarted server): nothing was read
                # yet, so connect again and start the view once more.
                self._drop()
                stack.enter_context(self._open().read_view(at_entry=at_entry))
            try:
                yield None
            except _CONNECTION_LOST:
                self._drop()            # connect again next time
                raise

    def _drop(self) -> None:
        if self.dbs is not None:
            self.dbs.close()
            self.dbs = None

    def build(self, kind: str, keys: list[str]) -> dict[str, dict | None]:
        return entity.build(self.cell_rows, kind, keys, self.children)

    def count(self, kinds: list[str]) -> int:
        return entity.count_entities(self.cell_rows, kinds, self.children)

    def page_entities(self, kinds, after, limit):
        return entity.page_entities(self.cell_rows, kinds, after, limit, self.children)

    def iter_entities(self, kinds, page: int = entity.PAGE):
        return entity.iter_entities(self.cell_rows, kinds, page, self.children)

    def kinds(self) -> list[str]:
        return list(self._kinds)

    def close(self) -> None:
        self._drop()


def entity_reader(source: binlog.Source) -> MysqlEntityReader:
    """The entity reader of ``source``: a flavor source reads flavors from the API
    database (its ``cell_url``); a cell reads servers from the cell database."""
    api = source.api_url if source.api_url != source.cell_url else None
    names = None
    if source.neutron_url and feed.KIND_SERVER in source.kinds:
        names = neutron.SecurityGroupNames(source.neutron_url, source.neutron_token).names
    return MysqlEntityReader(source.cell_url, api, source.kinds, source.service_down_time,
                             names, build_requests=api is None and feed.KIND_FLAVOR in source.kinds,
                             quota_defaults=source.quota_defaults)


class MysqlCellSource(CellSource):
    """A MariaDB/MySQL cell: the journal and the databases, for a control server or a
    pruner (see the module docstring)."""

    errors = (pymysql.err.MySQLError, apsw.Error, journal.JournalError, OSError)

    def __init__(self, source: binlog.Source, name: str = ""):
        self.source = source
        super().__init__(name, EpochBoundChangeLog(source.journal_path), entity_reader(source))

    def open_snapshot(self) -> HeldView:
        changelog = EpochBoundChangeLog(self.source.journal_path)
        reader = entity_reader(self.source)
        view = None
        try:
            seq = changelog.head()              # the head first (the consistency rule) ...
            epoch = changelog.epoch()
            changelog.close()
            view = reader.read_view(at_entry=True)      # ... then the state fixed
            view.__enter__()
            total = reader.count(self.kinds)
        except BaseException:
            with contextlib.suppress(Exception):
                changelog.close()
            if view is not None:
                with contextlib.suppress(Exception):
                    view.__exit__(None, None, None)
            reader.close()
            raise

        def release():
            with contextlib.suppress(Exception):
                view.__exit__(None, None, None)
            reader.close()
        return HeldView(seq, epoch, total, reader, release)


TAILER_RESTART_SECONDS = 1.0    # a tailer that died is started again after this


class MysqlPublishingSource(MysqlCellSource):
    """The publisher's own source: reconciles the journal, runs the tailer, wakes on
    the journal's commits and follows its epoch (see the module docstring)."""

    def __init__(self, source: binlog.Source, name: str):
        self.source = source
        self.name = name
        os.makedirs(os.path.dirname(os.path.abspath(source.journal_path)), exist_ok=True)
        binlog.open_change_log(source).close()   # the epoch decided before anything is served
        self.tailer = binlog.TailerProcess(source)
        self.tailer.start()                 # forked before the publisher has sockets
        self.watch: watcher.CommitWatcher | None = None
        self.conn_open = False
        self._tailer_died_at: float | None = None
        try:
            self._open()
        except BaseException:
            self.tailer.stop()
            raise

    def _open(self, epoch: str | None = None) -> None:
        """Open the journal and the readers, bound to the journal's epoch now (or to
        ``epoch``: the one the publisher publishes, when opening again after a fork)."""
        CellSource.__init__(self, self.name, EpochBoundChangeLog(self.source.journal_path),
                            entity_reader(self.source))
        if epoch is not None:
            self.changelog.opened_epoch = epoch
        self.opened_epoch = self.changelog.epoch()
        self.data_version = None
        self.conn_open = True

    def before_fork(self) -> None:
        if self.conn_open:
            CellSource.close(self)
            self.conn_open = False

    def after_fork(self) -> None:
        if not self.conn_open:
            self._open(self.opened_epoch)

    @property
    def ready(self) -> bool:
        return self.conn_open

    def wait(self, timeout: float) -> None:
        if self.watch is None:
            self.watch = watcher.CommitWatcher(self.source.journal_path)
            log.info("%s: watching the journal for commits (inotify %s)",
                     self.source.journal_path, self.watch.native)
        self.watch.wait(timeout)

    def has_news(self) -> bool:
        version = self.changelog.conn.execute("PRAGMA data_version").fetchone()[0]
        if version == self.data_version:
            return False
        self.data_version = version
        return True

    def _tailer_gone(self) -> str | None:
        """Why the tailer must be started again (it exited a while ago), or None."""
        if self.tailer.alive():
            self._tailer_died_at = None
            return None
        code = self.tailer.exitcode()
        if code == 2:
            raise mysql.SourceConfigError(
                f"the binlog tailer of {self.source.cell_url.redacted()} stopped on a "
                "setting that cannot work (see the log above)")
        now = time.monotonic()
        if self._tailer_died_at is None:
            log.warning("binlog tailer exited (%s); starting it again", code)
            self._tailer_died_at = now
        if now - self._tailer_died_at < TAILER_RESTART_SECONDS:
            return None
        return f"the binlog tailer exited ({code})"

    def changed_identity(self, published: int, look_now: bool) -> str | None:
        if not look_now:
            return None
        why = self._tailer_gone()
        if why is not None:
            return why
        now = self.changelog.current_epoch()
        if now != self.opened_epoch:
            return f"epoch changed under the publisher ({self.opened_epoch[:8]} -> {now[:8]})"
        return None

    def reopen(self, published: int) -> None:
        """Open the journal again (a new epoch), and start a tailer that exited. The
        publisher has let go of the source everywhere (its pruner, its control server)
        and this closes its own journal connection first: the tailer is forked with no
        SQLite connection open in this process (one carried over a fork, even unused,
        would share its lock state with the child's own)."""
        if self.conn_open:
            CellSource.close(self)
            self.conn_open = False
        if not self.tailer.alive():
            self.tailer.stop()
            self.tailer.start()
            self._tailer_died_at = None
        self._open()

    def close(self) -> None:
        if self.watch is not None:
            self.watch.close()
            self.watch = None
        if self.conn_open:
            CellSource.close(self)
            self.conn_open = False
        self.tailer.stop()


@dataclasses.dataclass
class MysqlOpener:
    """Opens the MariaDB/MySQL source (see ``source.SourceOpener``)."""
    source: binlog.Source
    name: str = ""

    def __call__(self, publishing: bool = False) -> MysqlCellSource:
        if publishing:
            return MysqlPublishingSource(self.source, self.name)
        return MysqlCellSource(self.source, self.name)


def make_source(source_url: str, api_source_url: str | None, name: str, state_dir: str,
                password_file: str | None = None, flavors: bool = False,
                **options) -> binlog.Source:
    """The binlog source of ``appliance cell --source mysql://...``: a cell publishes
    its servers and their instance actions (its API database read for what servers take
    from it); with ``flavors`` the source URL is Nova's API database and it publishes
    flavors, key pairs, quota limits and build requests.
    ``options``: ``service_down_time`` (Nova's liveness rule for host_status, 0: off),
    ``neutron_url`` and ``neutron_token`` (security group names asked of Neutron when
    a server is built, and again every few seconds by the tailer)."""
    options = {k: v for k, v in options.items() if v is not None}
    source = binlog.make_source(source_url, api_source_url, name, state_dir, password_file,
                                **options)
    if flavors:
        if api_source_url:
            raise mysql.SourceConfigError("a flavor source is the API database itself: "
                                          "--source mysql://.../nova_api, no --api-source")
        # Its build requests are servers of its own feed (build_requests.py).
        return dataclasses.replace(source, api_url=source.cell_url,
                                   kinds=(feed.KIND_FLAVOR, feed.KIND_KEYPAIR, feed.KIND_QUOTA,
                                          feed.KIND_SERVER, feed.KIND_AGGREGATE,
                                          feed.KIND_SERVER_GROUP),
                                   service_down_time=0.0)
    return dataclasses.replace(source, kinds=(feed.KIND_INSTANCE_ACTION, feed.KIND_SERVER,
                                              feed.KIND_HYPERVISOR, feed.KIND_SERVICE),
                               own_servers_only=True)
