"""The binlog tailer: reads a MariaDB server's row-based binlog as a replica does
(python-mysql-replication over PyMySQL, GTID auto-position, replica grants only)
and appends each committed source transaction's changed entity keys to the
journal (``journal.py``), in one SQLite transaction with the GTID position after
it. Nova's databases are never written.

Transactions: a MariaDB transaction in the binlog is a GTID event, its row events
and an XID event (or a ``COMMIT`` query); a DDL statement is a standalone GTID
event and one query. Rolled-back transactions never reach the binlog. The row
events of one transaction are collected (however many rows) and journaled
whole when its end is read; transactions that arrive together (the stream has
the next one at hand already) are journaled as a group, in one journal commit
with one commit wait (``Tailer._follow``): the journal never holds part of a
source transaction, and its position is always the one after the last
transaction it holds whole. A GTID event starts a new transaction
and drops whatever half-read one came before it (a stream that reconnected starts
again at the transaction after the journaled position).

Keys: ``binlog_keys.py`` maps a transaction's rows to entity keys (its fan-outs
read the databases when the transaction is journaled) and watches compute
services' liveness: a service that stops reporting has its servers journaled
(keys with no GTID; the position stays).

Epochs (``reconcile``), decided before anything is served and again at every
(re)connection of the stream. A new epoch (a random id; the journal emptied, seq
back to 0, consuming from the server's CURRENT ``@@gtid_binlog_pos``) when:

1. there is no journal yet (first attach);
2. the journal's server identity differs (MySQL ``server_uuid``; MariaDB has none,
   its ``server_id`` is used, and rule 5 catches a new datadir with the same id);
3. the server's ``@@gtid_binlog_pos`` is behind the journal's position in some
   GTID domain (a restored database, a new datadir);
4. the journal's position is no longer in the server's binlogs (purged: the
   stream answers error 1236);
5. re-reading the binlog from the position before the journal's last
   transaction does not give that same transaction (same GTID, timestamp, binlog
   file and offsets): the server's history is not the one the journal was made
   from. (When only the file holding that transaction was purged and the
   position after it is still there, the check cannot be made and the epoch is
   kept: binlog expiry on an idle database must not force a resync.)

Otherwise the journal keeps its epoch and the stream resumes at its position.

MySQL: its GTID sets are handled in form (``gtid_sets.py``: the journal's
position is the set consumed, the auto-position request sends it, ``is_behind``
compares it with ``@@gtid_executed``, the identity is ``@@server_uuid``, and
``gtid_mode=ON`` is required), but NOT tested against a real MySQL server (none
is installed where this is developed and tested).

Not handled: XA transactions (MariaDB binlogs ``XA PREPARE`` and
``XA COMMIT`` as two groups; the prepared group's rows would be dropped). Nova
uses neither.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass

import pymysql
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import (GtidEvent, HeartbeatLogEvent, MariadbGtidEvent,
                                      QueryEvent, RotateEvent, XidEvent)

from replica.cell import gtid_sets
from replica.cell.child_process import start_forked
from replica.cell import journal as journal_mod
from replica.cell import mysql, neutron, rechecks
from replica.cell.binlog_keys import (ROW_EVENTS, SERVICE_DOWN_TIME_S, WATCHED_TABLES,
                                      ChangedKeys, KeyMapper, LivenessWatch, Lookups)

log = logging.getLogger(__name__)

HEARTBEAT_S = 0.5              # the server's heartbeat when idle: how soon a stop is seen
STREAM_READ_TIMEOUT_S = 30     # no byte (not even a heartbeat) for this long: reconnect
RECONNECT_DELAYS_S = (0.2, 0.5, 1, 2, 5)
REPLICA_SERVER_ID_MIN = 1 << 24   # the ids a reader announces, unless configured: far
REPLICA_SERVER_ID_MAX = (1 << 31) - 1   # from the small ids servers are given
LIVENESS_CHECK_S = 1.0         # how often the liveness watch looks at the clock
# Whole source transactions that arrive together are journaled in one commit, up to:
GROUP_MAX_TRANSACTIONS = 1000
GROUP_MAX_ROWS = 20_000        # a larger single transaction is still one group of its own
GROUP_MAX_SECONDS = 0.02       # the first one of a group waits no longer than this
NEUTRON_RECHECK_S = 5.0        # how often Neutron's security group names are asked again
ER_MASTER_FATAL_ERROR_READING_BINLOG = 1236
ER_BAD_DB_ERROR = 1049
ER_LOCK_WAIT_TIMEOUT = 1205
SETTLE_EVERY_S = 5.0    # how often an unsettled group's row is tried again (see Tailer._settle)
GTID_STANDALONE = 0x01         # MariaDB GTID event flag: no COMMIT/XID follows (DDL)

BOUNDARY_EVENTS = [MariadbGtidEvent, GtidEvent, QueryEvent, XidEvent, HeartbeatLogEvent,
                   RotateEvent]
GTID_EVENTS = (MariadbGtidEvent, GtidEvent)      # MariaDB's, MySQL's
STREAM_EVENTS = BOUNDARY_EVENTS + list(ROW_EVENTS)

class BinlogError(RuntimeError):
    """The stream failed in a way a reconnect may fix."""


class PositionLost(BinlogError):
    """The journal's position cannot be resumed on this server: new epoch."""


# --- MariaDB GTID positions -------------------------------------------------

def parse_position(text: str) -> dict[int, tuple[int, int]]:
    """``"0-1-42,1-2-7"`` -> ``{domain: (server_id, seq_no)}``."""
    position = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        domain, server_id, seq_no = (int(x) for x in part.split("-"))
        position[domain] = (server_id, seq_no)
    return position


def format_position(position: dict[int, tuple[int, int]]) -> str:
    return ",".join(f"{d}-{s}-{n}" for d, (s, n) in sorted(position.items()))


def advance(text: str, gtid: str) -> str:
    """The position after the transaction ``gtid``: MariaDB's ``domain-server-seq``
    in a MariaDB position, MySQL's ``uuid:n`` added to a GTID set."""
    if gtid_sets.is_gtid_set(gtid):
        return gtid_sets.add(text, gtid)
    position = parse_position(text)
    domain, server_id, seq_no = (int(x) for x in gtid.split("-"))
    position[domain] = (server_id, seq_no)
    return format_position(position)


def is_behind(server: str, journal: str) -> bool:
    """True when the server's position lacks a domain of the journal's or has a
    lower seq_no in one: it cannot have written what the journal consumed. On
    MySQL (GTID sets): when the journal's set is not within the server's."""
    if gtid_sets.is_gtid_set(server) or gtid_sets.is_gtid_set(journal):
        return not gtid_sets.contains(server, journal)
    have = parse_position(server)
    return any(domain not in have or have[domain][1] < seq_no
               for domain, (_server_id, seq_no) in parse_position(journal).items())


# --- the stream ---------------------------------------------------------------

def _replica_server_id(configured: int | None) -> int:
    """The server id this reader announces. A dump connection with the id of
    another one makes the server drop the older, so without a configured id
    each connection takes a random one."""
    if configured:
        return configured
    return random.SystemRandom().randint(REPLICA_SERVER_ID_MIN, REPLICA_SERVER_ID_MAX)


def _connect_once():
    """A PyMySQL connect for the stream reader that refuses to open a second
    stream connection: the library would silently reconnect after a lost
    connection (in a tight loop when the server keeps refusing), where the
    tailer wants to apply its epoch rules and back off."""
    opened = []

    def connect(**settings):
        if "cursorclass" not in settings:          # the dump connection, not the ctl one
            if opened:
                raise BinlogError("the binlog stream connection was lost")
            opened.append(True)
        return pymysql.connect(**settings)
    return connect


def _stream(url: mysql.MySQLURL, schemas: list[str], position: str, server_id: int | None,
            events=STREAM_EVENTS, is_mariadb: bool = True) -> BinLogStreamReader:
    """A blocking GTID stream from ``position``. Blocking always: MariaDB's
    non-blocking dump writes to a non-blocking socket and drops the connection
    as soon as the reader falls behind; the server's heartbeat (sent when idle)
    tells the reader that it has caught up."""
    return BinLogStreamReader(**stream_arguments(url, schemas, position, server_id, events,
                                                 is_mariadb))


def stream_arguments(url: mysql.MySQLURL, schemas: list[str], position: str,
                     server_id: int | None, events=STREAM_EVENTS,
                     is_mariadb: bool = True) -> dict:
    """The stream reader's arguments. The auto-position request is MariaDB's
    (``@slave_connect_state``) for a MariaDB position, MySQL's COM_BINLOG_DUMP_GTID
    with the GTID set for a MySQL one (untested against a real MySQL server)."""
    settings = url.settings()
    settings.pop("database")
    settings["read_timeout"] = STREAM_READ_TIMEOUT_S
    return dict(
        connection_settings=settings, server_id=_replica_server_id(server_id),
        is_mariadb=is_mariadb, auto_position=position,
        resume_stream=True, blocking=True,
        only_schemas=schemas, only_tables=WATCHED_TABLES, only_events=events,
        slave_heartbeat=HEARTBEAT_S,
        freeze_schema=True, enable_logging=False, pymysql_wrapper=_connect_once())


def _is_position_error(exc: BaseException) -> bool:
    return (isinstance(exc, pymysql.err.MySQLError) and bool(exc.args)
            and exc.args[0] == ER_MASTER_FATAL_ERROR_READING_BINLOG)


def fingerprint(gtid_event, log_file: str | None, end_event) -> str:
    """What identifies a transaction in this server's binlog beyond its GTID: its
    timestamp, its binlog file and where its first and last events end there."""
    return (f"{gtid_event.gtid}@{gtid_event.timestamp}@{log_file}:"
            f"{gtid_event.packet.log_pos}-{end_event.packet.log_pos}")


def ends_transaction(event, gtid_event, began: bool = False) -> bool:
    """An XID event, a ``COMMIT`` query, or the one query of a standalone group
    (DDL): MariaDB flags it in its GTID event; on MySQL it is a query that no
    ``BEGIN`` query came before (``began``)."""
    if isinstance(event, XidEvent):
        return True
    if not isinstance(event, QueryEvent):
        return False
    if isinstance(gtid_event, MariadbGtidEvent):
        return bool(gtid_event.flags & GTID_STANDALONE or _is_commit(event))
    return _is_commit(event) or not (began or _is_begin(event))


def _first_transaction_after(url: mysql.MySQLURL, schemas: list[str], position: str,
                             server_id: int, is_mariadb: bool = True) -> str | None:
    """The fingerprint of the first transaction the server sends after
    ``position`` (None: none yet). Raises PositionLost when the server no longer
    has that position in its binlogs."""
    stream = _stream(url, schemas, position, server_id=server_id,
                     events=BOUNDARY_EVENTS, is_mariadb=is_mariadb)     # rows not decoded
    gtid_event = log_file = None
    began = False
    try:
        for event in stream:
            if isinstance(event, HeartbeatLogEvent) and gtid_event is None:
                return None                      # idle: nothing after the position
            if isinstance(event, GTID_EVENTS):
                gtid_event, log_file, began = event, stream.log_file, False
            elif gtid_event is not None and ends_transaction(event, gtid_event, began):
                return fingerprint(gtid_event, log_file, event)
            elif isinstance(event, QueryEvent) and _is_begin(event):
                began = True
        return None
    except pymysql.err.MySQLError as exc:
        if _is_position_error(exc):
            raise PositionLost(f"position {position!r} is not in the server's binlogs: "
                               f"{exc.args[1] if len(exc.args) > 1 else exc}") from None
        raise
    finally:
        stream.close()


@dataclass(frozen=True)
class Source:
    """A MariaDB cell source: the cell database and (optionally) Nova's API
    database on the same server, and the journal file."""
    cell_url: mysql.MySQLURL
    api_url: mysql.MySQLURL | None
    journal_path: str
    replica_server_id: int | None = None     # None: a random id per connection
    kinds: tuple = ("server", "flavor")
    own_servers_only: bool = False           # API rows: journal only this cell's servers
    service_down_time: float = SERVICE_DOWN_TIME_S   # Nova's liveness rule; 0: off
    neutron_url: str | None = None           # security group names from Neutron
    neutron_token: str | None = None
    quota_defaults: tuple | None = None      # nova.conf's [quota] defaults, (resource, limit)

    @property
    def schemas(self) -> list[str]:
        return [self.cell_url.database] + ([self.api_url.database] if self.api_url else [])


def _why_new_epoch(source: Source, state, facts: mysql.ServerFacts) -> str | None:
    if state is None:
        return "first attach"
    if state.server_identity != facts.identity():
        return f"another server ({facts.identity()}, journal has {state.server_identity})"
    if is_behind(facts.position, state.position):
        return (f"the server's position {facts.position!r} is behind the journal's "
                f"{state.position!r} (restored or another database)")
    probe = (source.cell_url, source.schemas)
    try:
        first = _first_transaction_after(*probe, state.verify_position, source.replica_server_id,
                                         facts.is_mariadb)
    except PositionLost:
        # The file holding the journal's last transaction is gone (binlog
        # expiry); what matters is whether the position after it is still there.
        try:
            _first_transaction_after(*probe, state.position, source.replica_server_id,
                                     facts.is_mariadb)
        except PositionLost as exc:
            return f"binlog purged: {exc}"
        log.info("cell source %s: the journal's last transaction is no longer in the "
                 "binlogs, its position is: resuming unverified", source.cell_url.redacted())
        return None
    if state.last_transaction and first != state.last_transaction:
        return (f"the binlog after {state.verify_position!r} holds {first!r}, not the "
                f"journal's last transaction {state.last_transaction!r}")
    return None


def check_api_database_reachable(source: Source, conn) -> None:
    """The API database's changes reach the publisher through the cell server's binlog
    only: an ``--api-source`` on another server whose database the cell's server does
    not hold (not the same server, not a Galera node or replica of it) would leave
    server groups, request specs and build requests unpublished without a word."""
    api = source.api_url
    if api is None or (api.host, api.port) == (source.cell_url.host, source.cell_url.port):
        return
    with conn.cursor() as cursor:
        cursor.execute("SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s",
                       (api.database,))
        if cursor.fetchone() is None:
            raise mysql.SourceConfigError(
                f"--api-source {api.redacted()}: the cell's server "
                f"{source.cell_url.host}:{source.cell_url.port} has no database "
                f"{api.database!r}, so its binlog cannot carry the API database's changes; "
                "give --api-source a URL of the cell's own server (or of a node of its "
                "Galera cluster that holds both databases)")


def reconcile(source: Source, journal: journal_mod.Journal,
              ) -> tuple[journal_mod.JournalState, str | None]:
    """Check the journal against the server (the epoch rules in the module
    docstring); start a new epoch when they say so. Returns the state and the
    reason for a new epoch (None: kept)."""
    conn = mysql.connect(source.cell_url, select_database=False)
    try:
        facts = mysql.server_facts(conn)
        if not facts.is_mariadb:
            log.warning("cell source %s: %s is MySQL: its GTID sets are supported but "
                        "untested against a real MySQL server", source.cell_url.redacted(),
                        facts.version)
        mysql.check_binlog_settings(facts)
        check_api_database_reachable(source, conn)
        state = journal.state()
        why = _why_new_epoch(source, state, facts)
        if why is None:
            return state, None
        # The server's current position, read now: every transaction committed
        # after it is journaled, and a snapshot served from this epoch (head read
        # first, then the read view) covers everything before it.
        current = mysql.server_facts(conn).position
        state = journal.new_epoch(facts.identity(), current, why)
        log.warning("cell source %s: new epoch %s at %r: %s", source.cell_url.redacted(),
                    state.epoch, current, why)
        return state, why
    finally:
        conn.close()


def open_change_log(source: Source) -> journal_mod.JournalChangeLog:
    """A ready ChangeLog for ``source``: the journal reconciled with the server
    (a new epoch when the rules say so), opened for the publisher's reads. Run
    the Tailer (its own thread or process) to keep it growing."""
    journal = journal_mod.Journal(source.journal_path)
    try:
        reconcile(source, journal)
    finally:
        journal.close()
    return journal_mod.JournalChangeLog(source.journal_path)


@dataclass(frozen=True)
class _Ended:
    """A source transaction read whole from the stream, not journaled yet."""
    gtid: str
    changed: ChangedKeys
    fingerprint: str


def _received_more(stream: BinLogStreamReader) -> bool:
    """Whether the stream's next bytes are already received (buffered or in the
    socket), so that reading the next event would not wait. Looks without waiting:
    the socket is non-blocking for the look. False when it cannot tell."""
    conn = getattr(stream, "_stream_connection", None)
    sock, rfile = getattr(conn, "_sock", None), getattr(conn, "_rfile", None)
    if sock is None or rfile is None:
        return False
    timeout = sock.gettimeout()
    try:
        sock.settimeout(0.0)
        return bool(rfile.peek(1))
    except (OSError, ValueError):       # nothing yet (TLS says so by raising), closed
        return False
    finally:
        sock.settimeout(timeout)


@dataclass
class TailerStats:
    transactions: int = 0
    groups: int = 0                # journal commits of source transactions
    rows: int = 0
    keys: int = 0
    new_epochs: int = 0
    reconnects: int = 0
    services_down: int = 0
    last_gtid: str = ""
    last_error: str = ""


class Tailer:
    """Streams the binlog into the journal until ``stop`` is set.

    ``on_commit(first_seq, last_seq)`` is called after each journal transaction
    that added events (in the tailer's thread). ``run()`` reconnects with backoff
    on connection errors and applies the epoch rules at every (re)connection."""

    def __init__(self, source: Source, stop: threading.Event | None = None,
                 on_commit=None, service_down_time: float | None = None):
        self.source = source
        if service_down_time is None:
            service_down_time = source.service_down_time
        self.stop = stop or threading.Event()
        self.on_commit = on_commit
        self.mapper = KeyMapper(source.cell_url.database,
                                source.api_url.database if source.api_url else None,
                                kinds=source.kinds, service_down_time=service_down_time,
                                own_servers_only=source.own_servers_only)
        self.stats = TailerStats()
        self.liveness = LivenessWatch(service_down_time)
        self.security_groups = None         # rechecks.SecurityGroupWatch, made in _follow
        self.next_neutron = 0.0
        # Every host judged again from the services table: catches the turns to and from
        # UNKNOWN that the rows' order cannot tell (a report set back in time, as by hand
        # or a restored row); the other turns come with the row that makes them.
        self.rejudge = rechecks.LivenessWatch(
            lambda sql, params=(): self._lookups.cell(sql, params), service_down_time)
        self._lookups: Lookups | None = None
        # Groups journaled although their commit wait timed out: (probe, keys). Their
        # entities may have been built before the transaction was visible; once the
        # probe's row can be read with a lock, their keys are journaled again.
        self.unsettled: list[tuple[tuple, list]] = []
        self.next_settle = 0.0

    def run(self) -> None:
        journal = journal_mod.Journal(self.source.journal_path)
        failures = 0
        try:
            while not self.stop.is_set():
                try:
                    state, why = reconcile(self.source, journal)
                    if why is not None:
                        self.stats.new_epochs += 1
                    self._follow(journal, state)
                    failures = 0
                except mysql.SourceConfigError:
                    raise
                except (pymysql.err.MySQLError, OSError, BinlogError) as exc:
                    self.stats.last_error = f"{type(exc).__name__}: {exc}"
                    self.stats.reconnects += 1
                    delay = RECONNECT_DELAYS_S[min(failures, len(RECONNECT_DELAYS_S) - 1)]
                    failures += 1
                    log.warning("cell source %s: binlog stream: %s; again in %.1f s",
                                self.source.cell_url.redacted(), self.stats.last_error, delay)
                    self.stop.wait(delay)
        finally:
            journal.close()

    def _follow(self, journal: journal_mod.Journal, state: journal_mod.JournalState) -> None:
        """Stream from the journal's position until stopped or the stream fails.

        Whole transactions that arrive together (the next event is already received
        when one ends) are journaled as a group: one commit wait and one journal
        commit for all of them (``_journal``). A group is journaled as soon as the
        stream has nothing more at hand, and at the latest after GROUP_MAX_SECONDS
        or GROUP_MAX_TRANSACTIONS / GROUP_MAX_ROWS; never half a transaction."""
        position = state.position
        lookups = self._lookups = Lookups(self.source.cell_url, self.source.api_url)
        self.mapper.look_at_zones(lookups)
        stream = _stream(self.source.cell_url, self.source.schemas, position,
                         server_id=self.source.replica_server_id,
                         is_mariadb=mysql.is_mariadb_identity(state.server_identity))
        gtid_event = changed = log_file = None
        began = False
        group: list[_Ended] = []
        group_rows, group_began = 0, 0.0
        next_check = 0.0
        try:
            while not self.stop.is_set():
                if group and (len(group) >= GROUP_MAX_TRANSACTIONS
                              or group_rows >= GROUP_MAX_ROWS
                              or time.monotonic() - group_began >= GROUP_MAX_SECONDS
                              or not _received_more(stream)):
                    position = self._journal(journal, lookups, group, position)
                    group, group_rows = [], 0
                if changed is None and not group and self.unsettled \
                        and time.monotonic() >= self.next_settle:
                    self._settle(journal, lookups)
                    self.next_settle = time.monotonic() + SETTLE_EVERY_S
                if changed is None and not group and "server" in self.mapper.kinds \
                        and time.monotonic() >= next_check:
                    if self.liveness.down_time > 0:
                        self._check_liveness(journal, lookups)
                        self._rejudge_liveness(journal)
                    next_check = time.monotonic() + LIVENESS_CHECK_S
                    self._recheck_security_groups(journal)
                try:
                    event = stream.fetchone()
                except pymysql.err.MySQLError as exc:
                    if _is_position_error(exc):
                        raise PositionLost(str(exc)) from None
                    raise
                if event is None:
                    raise BinlogError("the server ended the binlog stream")
                if isinstance(event, GTID_EVENTS):
                    gtid_event, changed = event, ChangedKeys()
                    log_file, began = stream.log_file, False
                elif changed is None:
                    continue                   # heartbeat, rotate: between transactions
                elif isinstance(event, ROW_EVENTS):
                    self.mapper.add(changed, event)
                elif ends_transaction(event, gtid_event, began):
                    if not group:
                        group_began = time.monotonic()
                    group.append(_Ended(gtid_event.gtid, changed,
                                        fingerprint(gtid_event, log_file, event)))
                    group_rows += changed.rows
                    gtid_event = changed = None
                elif isinstance(event, QueryEvent) and _is_begin(event):
                    began = True               # MySQL: a transaction's first event
            if group:                          # stopped: what was read whole is kept
                self._journal(journal, lookups, group, position)
        finally:
            stream.close()
            lookups.close()

    def _journal(self, journal: journal_mod.Journal, lookups: Lookups,
                 group: list["_Ended"], position: str) -> str:
        """Journal whole source transactions (binlog order) in one journal commit,
        after one commit wait on the last changed row among them: MariaDB (and MySQL
        with ``binlog_order_commits``, its default) makes transactions visible in
        InnoDB in their binlog order, so once the last one is visible, all are."""
        probe = next((ended.changed.probe for ended in reversed(group)
                      if ended.changed.probe is not None), None)
        settled = probe is None or self._wait_committed(lookups, probe)
        transactions = []
        verify = position
        for ended in group:
            changed = ended.changed
            for host, report in changed.service_reports:
                if self.liveness.note(host, report):
                    changed.service_hosts.add(host)          # counted down, up again
            keys = self.mapper.resolve(changed, lookups) if changed.keys or changed.rows else []
            transactions.append((keys, ended.gtid))
            verify, position = position, advance(position, ended.gtid)
            self.stats.rows += changed.rows
        first, last = journal.append_transactions(transactions, position, verify,
                                                  group[-1].fingerprint)
        if not settled:
            self.unsettled.append((probe, [key for keys, _gtid in transactions for key in keys]))
        self.stats.transactions += len(group)
        self.stats.groups += 1
        self.stats.keys += last - first + 1
        self.stats.last_gtid = group[-1].gtid
        if last >= first and self.on_commit is not None:
            self.on_commit(first, last)
        return position

    def _wait_committed(self, lookups: Lookups, probe: tuple) -> bool:
        """Journal a transaction only once the server shows it to new snapshots (see
        ``Lookups.wait_committed``). A row that stays locked longer than the wait (a
        slow commit, or a later transaction holding it) is logged and the keys are
        journaled anyway, but kept as unsettled (False): ``_settle`` journals them
        again once the row can be read, so an entity built too early is built again."""
        try:
            lookups.wait_committed(probe)
        except pymysql.err.OperationalError as exc:
            if not exc.args or exc.args[0] != ER_LOCK_WAIT_TIMEOUT:
                raise
            log.warning("cell source %s: %s.%s %r still locked after its transaction was "
                        "binlogged; journaled now and again once it is readable",
                        self.source.cell_url.redacted(), probe[0], probe[1], probe[2])
            return False
        except pymysql.err.ProgrammingError as exc:     # a table dropped since
            log.info("cell source %s: commit wait on %s.%s: %s",
                     self.source.cell_url.redacted(), probe[0], probe[1], exc)
        return True

    def _settle(self, journal: journal_mod.Journal, lookups: Lookups) -> None:
        """Journal again the keys of the oldest unsettled group once its row is
        readable (one wait per call, between transactions)."""
        probe, keys = self.unsettled[0]
        if not self._wait_committed(lookups, probe):
            return
        self.unsettled.pop(0)
        if keys:
            first, last = journal.append_keys(keys)
            self.stats.keys += last - first + 1
            if self.on_commit is not None:
                self.on_commit(first, last)

    def _check_liveness(self, journal: journal_mod.Journal, lookups: Lookups) -> None:
        """Journal the servers of hosts whose compute service just went down."""
        if not self.liveness.loaded:
            try:
                self.liveness.load(lookups.compute_reports())
            except pymysql.err.ProgrammingError:     # no services table (yet)
                return
            except pymysql.err.OperationalError as exc:
                if exc.args and exc.args[0] == ER_BAD_DB_ERROR:   # no cell database (yet)
                    lookups.close()
                    return
                raise
        hosts = self.liveness.crossed()
        if not hosts:
            return
        keys = [("server", uuid) for uuid in lookups.live_instances_on(hosts)]
        if "hypervisor" in self.mapper.kinds:
            keys += [("hypervisor", uuid) for uuid in lookups.compute_nodes_on(hosts)]
        self.stats.services_down += len(hosts)
        if not keys:
            return
        first, last = journal.append_keys(keys)
        self.stats.keys += last - first + 1
        if self.on_commit is not None:
            self.on_commit(first, last)


    def _rejudge_liveness(self, journal: journal_mod.Journal) -> None:
        """Journal the servers of the hosts whose status turned to or from UNKNOWN,
        judged from the services table as the entity builder judges it."""
        try:
            keys = [("server", u) for u in self.rejudge.changed_servers("UNKNOWN")]
            if "hypervisor" in self.mapper.kinds:
                keys += [("hypervisor", u) for u in self.rejudge.changed_nodes]
        except pymysql.err.ProgrammingError:        # no services table (yet)
            return
        except pymysql.err.OperationalError as exc:
            if exc.args and exc.args[0] == ER_BAD_DB_ERROR:   # no cell database (yet)
                return
            raise
        if keys:
            first, last = journal.append_keys(keys)
            self.stats.keys += last - first + 1
            if self.on_commit is not None:
                self.on_commit(first, last)

    def _recheck_security_groups(self, journal: journal_mod.Journal) -> None:
        """Every NEUTRON_RECHECK_S, journal the live servers whose security group names
        changed in Neutron (a change no Nova table records)."""
        if self.source.neutron_url is None or time.monotonic() < self.next_neutron:
            return
        self.next_neutron = time.monotonic() + NEUTRON_RECHECK_S
        if self.security_groups is None:
            self.security_groups = rechecks.SecurityGroupWatch(
                lambda sql, params=(): self._lookups.cell(sql, params),
                neutron.SecurityGroupNames(self.source.neutron_url, self.source.neutron_token))
        try:
            keys = [("server", u) for u in self.security_groups.changed_servers()]
        except pymysql.err.ProgrammingError:        # no instances table (yet)
            return
        if keys:
            first, last = journal.append_keys(keys)
            self.stats.keys += last - first + 1
            if self.on_commit is not None:
                self.on_commit(first, last)


def _is_commit(event: QueryEvent) -> bool:
    """``COMMIT``, or the ``ROLLBACK`` that ends a transaction whose changes to a
    non-transactional table stayed (only such a rollback reaches the binlog)."""
    query = event.query
    if isinstance(query, bytes):
        query = query.decode("utf-8", "replace")
    return query.strip().upper() in ("COMMIT", "ROLLBACK")


def _is_begin(event: QueryEvent) -> bool:
    query = event.query
    if isinstance(query, bytes):
        query = query.decode("utf-8", "replace")
    return query.strip().upper() == "BEGIN"


def make_source(source_url: str, api_source_url: str | None, name: str, state_dir: str,
                password_file: str | None = None,
                password_env: str = mysql.PASSWORD_ENV, **options) -> Source:
    """The Source for ``appliance cell --source mysql://... --api-source mysql://...``:
    the journal is ``<state_dir>/<name>.journal``; a password missing from a URL
    comes from ``password_file`` or the environment variable ``password_env``;
    ``options`` are further ``Source`` fields (``service_down_time``, ``neutron_url``,
    ``neutron_token``)."""
    cell_url = mysql.parse_url(source_url, password_file, password_env)
    api_url = mysql.parse_url(api_source_url, password_file, password_env) \
        if api_source_url else None
    return Source(cell_url=cell_url, api_url=api_url,
                  journal_path=os.path.join(state_dir, f"{name}.journal"), **options)


def run_tailer(source: Source, stop: threading.Event | None = None) -> None:
    """Entry point for a tailer thread, or (``stop`` None, in a process's main
    thread) a tailer process that stops cleanly on SIGTERM or SIGINT."""
    if stop is None:
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda _signum, _frame: stop.set())
    Tailer(source, stop).run()


PR_SET_PDEATHSIG = 1
TAILER_STOP_S = 10


def _tailer_main(source: Source) -> None:
    """The tailer's process: stops on SIGTERM or when its parent dies (a killed
    publisher leaves no orphan reading the binlog); exits 2 on a setting that
    cannot work (a restart would not help)."""
    stop = threading.Event()
    signal.signal(signal.SIGINT, signal.SIG_IGN)       # the publisher handles Ctrl-C
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:          # the parent died before the line above
        return
    try:
        import setproctitle
        setproctitle.setproctitle(f"appliance cell: binlog tailer {source.cell_url.redacted()}")
    except ImportError:
        pass
    try:
        Tailer(source, stop).run()
    except mysql.SourceConfigError as exc:
        log.error("cell source %s: %s", source.cell_url.redacted(), exc)
        sys.exit(2)


class TailerProcess:
    """The tailer in a forked child process of the publisher (the binlog's decoding
    is CPU-bound Python: in a thread it would hold the GIL the publisher needs).
    The publisher learns of new journal entries the way it learns of outbox
    commits: through the journal's WAL (``watcher.py``)."""

    def __init__(self, source: Source):
        self.source = source
        self.proc: multiprocessing.Process | None = None

    def start(self) -> None:
        context = multiprocessing.get_context("fork")
        self.proc = context.Process(target=_tailer_main, args=(self.source,),
                                    name="binlog-tailer", daemon=True)
        start_forked(self.proc)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.is_alive()

    def exitcode(self) -> int | None:
        return self.proc.exitcode if self.proc is not None else None

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(TAILER_STOP_S)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join(TAILER_STOP_S)
        self.proc = None
