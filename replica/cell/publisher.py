"""The cell publisher: tails the cell's source (``source.py``: its change log and
its entities), publishes batches and heartbeats on a nanomsg PUB socket, and answers
control requests on a REP socket. Everything here is written against the source
seam; what is particular to a SQLite cell (inotify on its WAL, a replaced database
file, the record of what was published) is behind it, in ``sqlite_source.py``.

Threads and processes: the main loop tails and publishes; a pruner thread trims
the change log to its retention; the control server (``control.py``) answers requests
with its own source in a child process of its own (forked at start, with its
REP socket; it dies with the publisher). None of them waits on another: they share
no connection, and reads never wait for the cell's writers. The control server has
its own process, not a thread, because building a snapshot page or a replay is
CPU-bound Python: in a thread it would hold the GIL that the live feed needs between
every row it reads, and live batches would go out hundreds of milliseconds late
during a resync. Called from a thread other than the main one (where forking is
unsafe), or with ``control_process=False``, the control server runs in a thread
instead.

Tailing: the loop sleeps until the source says a change may have come
(``CellSource.wait``; SQLite: inotify on the WAL, re-checking shortly after each
write), asks it whether there is news (SQLite: ``PRAGMA data_version``) and reads
every event after the last one it published, in one read view per batch (the
change log first, then the entities). Each changed key is built once per batch; a
key that appears twice in a batch carries the same (latest) entity in both events.
A batch is capped by ``batch_max`` events and by bytes. The last upsert of each key
in a batch carries its replica row, rendered here once (``prerender.py``).

Restart: the publisher starts at the current head. Events committed while it was
down are not re-sent live; the next heartbeat carries the head, the appliance sees
the gap and replays it over the control socket.

Sources: a SQLite cell database (``--db``, ``sqlite_source.py``) or a MariaDB/MySQL
one read through its binlog (``PublisherConfig.source``, ``mysql_source.py``: the
source forks its binlog tailer when the publisher opens it, before any socket or
thread exists, wakes the loop on the journal's commits, and starts the tailer again
when it dies; a tailer that stops on a setting that cannot work stops the publisher
with ``mysql.SourceConfigError``).

Another source behind the same name (SQLite: a restored backup moved over the file,
see ``sqlite_source.py``; MariaDB: a new epoch the tailer started after finding the
server's history changed): the source says so (``changed_identity``) on the slow
poll; the publisher lets go of it everywhere (the control server, the pruner), has it
opened again (``reopen``) and goes on from its head with its epoch: the first
heartbeat with that epoch makes the appliance resync.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass

import nanomsg

from replica import feed, sealing
from replica.cell import control, prerender
from replica.cell.child_process import start_forked
from replica.key_file import sealer_for
from replica.cell.source import CellSource, SourceOpener

log = logging.getLogger("replica.cell.publisher")

SNDBUF_BYTES = 4 * 1024 * 1024
BATCH_MAX_BYTES = 3_500_000     # stay well under feed.MAX_MESSAGE_BYTES
SLOW_POLL_SECONDS = 0.5         # check the outbox and the file at least this often
PRUNE_INTERVAL_SECONDS = 5.0
ERROR_BACKOFF_SECONDS = 0.5
PUBLISH_ROUND_BATCHES = 20      # batches per round before the loop looks at its timers
RELEASE_SECONDS = 30.0          # the control server finishes its request and lets go


@dataclass
class PublisherConfig:
    db: str
    name: str
    feed_url: str
    control_url: str
    retention_events: int = 100_000
    retention_seconds: float = 3600.0
    heartbeat_interval: float = 1.0
    batch_max: int = 500
    control_process: bool = True     # the control server in a child process (see above)
    api_db: str | None = None        # Nova's API database beside the cell's (SQLite)
    service_down_time: float = 0.0   # Nova's liveness rule for host_status; 0: off
    neutron_url: str | None = None   # security group names from Neutron
    neutron_token: str | None = None
    # The [quota] defaults of the operator's nova.conf, (resource, limit) pairs (SQLite
    # source; a MariaDB source carries its own); None: Nova's option defaults
    quota_defaults: tuple | None = None
    # A MariaDB/MySQL source (``binlog.Source``, see ``mysql_source.py``); None: ``db`` is
    # a SQLite cell database
    source: object | None = None
    # The cell's key file (``key_file.py``): feed messages and control replies are
    # sealed, control requests must open; None: neither (unauthenticated)
    key_file: str | None = None
    encrypt: bool = True             # False: authenticated only, readable on the wire


def sealer_of(config: PublisherConfig) -> sealing.Sealer | None:
    """The cell's sealer, from its key file (KeyFileError if the file is unusable)."""
    return sealer_for(config.name, config.key_file, config.encrypt)


@dataclass
class PublisherStats:
    batches: int = 0
    events: int = 0
    heartbeats: int = 0
    send_errors: int = 0
    pruned: int = 0
    read_errors: int = 0
    prune_errors: int = 0
    reopens: int = 0


def source_opener(config: PublisherConfig) -> SourceOpener:
    """How the publisher and its readers open the cell's source."""
    if config.source is not None:
        from replica.cell.mysql_source import MysqlOpener
        return MysqlOpener(config.source, config.name)
    from replica.cell.sqlite_source import ServerOptions, SqliteOpener
    return SqliteOpener(config.db, config.name, ServerOptions(
        config.api_db, config.service_down_time, config.neutron_url, config.neutron_token,
        config.quota_defaults))


def check_nanomsg() -> None:
    """nanomsg-python silently falls back to a ctypes build that fails at bind()."""
    if nanomsg.wrapper.__name__ != "_nanomsg_cpy":
        raise RuntimeError("nanomsg-python is the ctypes fallback build, not the C extension "
                           "(reinstall: pip install --no-cache-dir --no-binary nanomsg nanomsg)")


class Publisher:
    """One cell's publisher. ``run()`` returns when ``stop`` is set."""

    def __init__(self, config: PublisherConfig, stop: threading.Event):
        self.config = config
        self.stop = stop
        self.stats = PublisherStats()
        self.opener = source_opener(config)
        self.sealer = sealer_of(config)      # before anything opens: a bad key file stops here
        self.open_error: str | None = None
        self.source: CellSource = self.opener(publishing=True)
        self._adopt()
        self.pub: nanomsg.Socket | None = None
        self.rep: nanomsg.Socket | None = None
        self.control: ControlProcess | ControlThread | None = None
        self.pruner: Pruner | None = None

    def _adopt(self) -> None:
        """Publish what the (newly opened) source holds: its epoch, kinds, head."""
        self.epoch = self.source.changelog.epoch()
        self.kinds = self.source.kinds
        self.last = self.source.changelog.head()
        self.behind = False

    # -- the source ----------------------------------------------------------

    def reopen(self, why: str) -> bool:
        """Let go of the source everywhere and open it again (the source says why: for
        SQLite, the file was replaced). Returns False when it cannot be opened yet
        (the loop tries again)."""
        if self.source.ready:
            log.warning("%s: %s; opening it again", self.config.db, why)
            self._release()
        try:
            self.source.reopen(self.last)
        except (*self.source.errors, LookupError, OSError) as exc:
            if str(exc) != self.open_error:      # said once, tried every slow poll
                log.error("%s: cannot open the database: %s; trying again every %.1fs",
                          self.config.db, exc, SLOW_POLL_SECONDS)
                self.open_error = str(exc)
            return False
        self.open_error = None
        self._adopt()
        self.stats.reopens += 1
        log.info("publishing %s epoch %s from seq %d (database opened again)",
                 self.config.name, self.epoch, self.last)
        self._start_readers()
        self.heartbeat()
        return True

    def _release(self) -> None:
        """Stop everything but the main loop from reading the source."""
        if self.pruner is not None:
            self.pruner.stop()
            self.pruner = None
        if self.control is not None and not self.control.release(RELEASE_SECONDS, self.stop):
            log.warning("control server did not let go of the database; restarting it "
                        "in a thread")
            self.control.stop()
            self.control = None

    def save_published(self) -> None:
        """Let the source keep the last (epoch, seq) published across restarts."""
        self.source.record_published(self.last)

    def _start_readers(self) -> None:
        """The pruner, and the control server for the current epoch (forked at start,
        told to open again later, or a thread when it cannot be a process)."""
        self.pruner = Pruner(self.opener, self.config, self.stats)
        self.pruner.start()
        if self.control is not None:
            if self.control.reopen(self.epoch, self.kinds):
                return
            self.control.stop()
        if self.rep is None:
            self.rep = open_control_socket(self.config.control_url)
        self.control = ControlThread(self.opener, self.config, self.epoch, self.kinds, self.rep)
        self.control.start()

    # -- sockets -----------------------------------------------------------

    def open_sockets(self, control: bool = True) -> None:
        self.pub = nanomsg.Socket(nanomsg.PUB)
        self.pub.set_int_option(nanomsg.SOL_SOCKET, nanomsg.SNDBUF, SNDBUF_BYTES)
        self.pub.bind(self.config.feed_url)
        if control:
            self.rep = open_control_socket(self.config.control_url)

    def close(self) -> None:
        if self.source.ready:
            self.save_published()
        for sock in (self.pub, self.rep):
            if sock is not None:
                sock.close()
        self.source.close()

    def send(self, data: bytes) -> None:
        if self.sealer is not None:
            data = self.sealer.seal_feed(data)
        try:
            self.pub.send(data, nanomsg.DONTWAIT)
        except nanomsg.NanoMsgAPIError as exc:
            # PUB drops for slow subscribers anyway; seqs make the loss visible.
            self.stats.send_errors += 1
            log.warning("feed send failed: %s", exc)

    # -- tail --------------------------------------------------------------

    def publish_pending(self) -> int:
        """Publish the events after ``self.last``, up to PUBLISH_ROUND_BATCHES batches
        (``self.behind`` says whether more are waiting, so that heartbeats and the
        loop's other duties keep their pace under a flood); return how many went out.
        Each batch is read in one read view: the change log first, then its entities
        (the seam's consistency rule)."""
        sent = 0
        self.behind = False
        changelog, entities = self.source.changelog, self.source.entities
        for _round in range(PUBLISH_ROUND_BATCHES):
            if self.stop.is_set():
                break
            # The batch goes out before its read view ends: ending it is a command to
            # the database (MariaDB: a ROLLBACK per connection), not to be waited for.
            with entities.read_view():
                rows = changelog.events_after(self.last, self.config.batch_max)
                if not rows:
                    return sent
                events = control.built_events(entities, rows)
                events = prerender.with_rows(self.config.name, events)
                data = feed.encode_batch(self.config.name, self.epoch, events,
                                         prerender.RENDER_VERSION)
                if len(data) <= BATCH_MAX_BYTES:     # the usual case: encoded once, not sized
                    self.send(data)
                    self.stats.batches += 1
                else:
                    for chunk in self._chunks(events):
                        self.send(feed.encode_batch(self.config.name, self.epoch, chunk,
                                                    prerender.RENDER_VERSION))
                        self.stats.batches += 1
            self.stats.events += len(events)
            self.last = events[-1].seq
            sent += len(events)
            if len(rows) < self.config.batch_max:
                return sent         # that read reached the head: no second look needed
        else:
            self.behind = True
        return sent

    def _chunks(self, events: list[feed.Event]):
        """Split a batch so that no message exceeds BATCH_MAX_BYTES."""
        chunk, total = [], 0
        for event in events:
            # the entity's wire bytes and its row's
            size = len(event.entity or b"") + prerender.row_bytes(event.row) + 64
            if chunk and total + size > BATCH_MAX_BYTES:
                yield chunk
                chunk, total = [], 0
            chunk.append(event)
            total += size
        if chunk:
            yield chunk

    def heartbeat(self) -> None:
        oldest = self.source.changelog.oldest()
        self.send(feed.encode_heartbeat(self.config.name, self.epoch, self.last, oldest,
                                        time.time()))
        self.stats.heartbeats += 1
        self.save_published()

    def run(self) -> None:
        # Fork first: before this process has sockets or threads of its own.
        if (self.config.control_process
                and threading.current_thread() is threading.main_thread()):
            self.control = ControlProcess(self.opener, self.config, self.epoch, self.kinds)
            self.source.before_fork()
            try:
                self.control.start()
            finally:
                self.source.after_fork()
        self.open_sockets(control=self.control is None)
        if self.control is None:
            self.control = ControlThread(self.opener, self.config, self.epoch, self.kinds,
                                         self.rep)
            self.control.start()
        self.pruner = Pruner(self.opener, self.config, self.stats)
        self.pruner.start()
        log.info("publishing %s epoch %s from seq %d on %s (control %s)",
                 self.config.name, self.epoch, self.last, self.config.feed_url,
                 self.config.control_url)
        next_hb = next_check = time.monotonic()
        try:
            while not self.stop.is_set():
                try:
                    self._step(time.monotonic() >= next_check)
                    now = time.monotonic()
                    if now >= next_check:
                        next_check = now + SLOW_POLL_SECONDS
                    if now >= next_hb and self.source.ready:
                        self.publish_pending()          # the heartbeat's head is what was sent
                        self.heartbeat()
                        next_hb = now + self.config.heartbeat_interval
                        self._check_control()
                except self.source.errors as exc:
                    # A database the cell is rebuilding, a full disk, I/O errors: nothing
                    # was marked published, so the same events go out once it reads again.
                    self.stats.read_errors += 1
                    self.behind = True      # read again after the backoff, news or not
                    log.warning("reading the change log failed (%s); retrying", exc)
                    self.stop.wait(ERROR_BACKOFF_SECONDS)
                due = next_check if not self.source.ready else min(next_hb, next_check)
                timeout = 0.0 if self.behind else due - time.monotonic()
                self.source.wait(timeout)   # returns early when a change may have come
        finally:
            self.stop.set()
            if self.pruner is not None:
                self.pruner.stop()
            if self.control is not None:
                self.control.stop()
            self.close()

    def _step(self, slow_poll: bool) -> None:
        """One turn of the loop: whether the source must be opened again, then whatever
        the change log holds."""
        if not self.source.ready:
            if slow_poll:
                self.reopen("not open")
            return
        why = self.source.changed_identity(self.last, slow_poll)
        if why is not None and not self.reopen(why):
            return
        self.source.tick(slow_poll)
        if self.behind or self.source.has_news():
            self.publish_pending()

    def _check_control(self) -> None:
        if isinstance(self.control, ControlProcess) and not self.control.alive():
            # Not forked again (this process has sockets and threads now): the
            # control server goes on in a thread.
            log.warning("control process exited (%s); serving control requests from a "
                        "thread", self.control.exitcode())
            self.control.stop()
            self.rep = self.rep or open_control_socket(self.config.control_url)
            self.control = ControlThread(self.opener, self.config, self.epoch, self.kinds,
                                         self.rep)
            self.control.start()


class Pruner:
    """Trims the change log to its retention now and every PRUNE_INTERVAL_SECONDS, with
    a source of its own, in a thread; stopped (and its source closed) when the source
    is opened again."""

    def __init__(self, opener: SourceOpener, config: PublisherConfig, stats: PublisherStats):
        self.opener = opener
        self.config = config
        self.stats = stats
        self.halt = threading.Event()
        self.thread = threading.Thread(target=self.run, name="cell-prune", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.halt.set()
        self.thread.join()      # a prune call is bounded (prune_chunk rows)

    def run(self) -> None:
        source = self.opener()
        try:
            while True:
                try:
                    while True:
                        removed = source.changelog.prune(self.config.retention_events,
                                                         self.config.retention_seconds)
                        self.stats.pruned += removed
                        if removed < source.changelog.prune_chunk or self.halt.is_set():
                            break
                except Exception as exc:   # busy cell, disk full: try again next round
                    self.stats.prune_errors += 1
                    log.warning("change log prune failed: %s", exc)
                if self.halt.wait(PRUNE_INTERVAL_SECONDS):
                    return
        finally:
            source.close()


def open_control_socket(url: str) -> nanomsg.Socket:
    sock = nanomsg.Socket(nanomsg.REP)
    sock.set_int_option(nanomsg.SOL_SOCKET, nanomsg.SNDBUF, SNDBUF_BYTES)
    sock.set_int_option(nanomsg.SOL_SOCKET, nanomsg.RCVMAXSIZE, feed.MAX_MESSAGE_BYTES)
    sock.bind(url)
    return sock


PR_SET_PDEATHSIG = 1
CONTROL_STOP_SECONDS = 5.0
# The control process yields the CPU to the live feed (and to the cell's own work):
# snapshots and replays are bulk work that a requester waits for anyway.
CONTROL_NICE = 5
CHANNEL_POLL_SECONDS = 0.2      # how often a waiting control process looks at its stop
CONTROL_BIND_WAIT_SECONDS = 10.0    # the control address may still be held by the control
CONTROL_BIND_RETRY_SECONDS = 0.05   # process of a publisher that just died


class _Halt:
    """The control server's ``stop`` in the control process: set on SIGTERM, and also
    when the publisher has written on the channel (it wants the database let go)."""

    def __init__(self, stop: threading.Event, channel):
        self.stop = stop
        self.channel = channel

    def is_set(self) -> bool:
        if self.stop.is_set():
            return True
        try:
            return self.channel.poll()
        except (OSError, EOFError):
            return True

    def wait(self, timeout: float) -> bool:
        self.stop.wait(timeout)
        return self.is_set()


def _next_message(channel, stop: threading.Event):
    """The publisher's next message on the channel, or None once stopping."""
    while not stop.is_set():
        try:
            if channel.poll(CHANNEL_POLL_SECONDS):
                return channel.recv()
        except (OSError, EOFError):     # the publisher is gone
            return None
    return None


def _bind_control_socket(url: str, stop: threading.Event) -> nanomsg.Socket | None:
    """The control socket, bound once the address is free: the control process of a
    publisher that died may still be going away."""
    deadline = time.monotonic() + CONTROL_BIND_WAIT_SECONDS
    while True:
        try:
            return open_control_socket(url)
        except nanomsg.NanoMsgAPIError as exc:
            if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                raise
        if stop.wait(CONTROL_BIND_RETRY_SECONDS):
            return None


def _control_main(opener: SourceOpener, config: PublisherConfig, epoch: str,
                  kinds: list[str], channel, parent: int) -> None:
    """The control server's process: answers until SIGTERM, or until the publisher
    dies. PR_SET_PDEATHSIG with SIGKILL: a SIGKILLed publisher leaves no orphan holding
    its address, not even for the request it is serving (SIGTERM waited for it, and a
    publisher started again at once found the address taken). It only reads the cell.
    When the publisher asks (the database file was replaced), it closes its
    connections, says so, and starts again with the epoch the publisher sends."""
    stop = threading.Event()
    signal.signal(signal.SIGINT, signal.SIG_IGN)      # the publisher handles Ctrl-C
    _stop_on_signals(stop, (signal.SIGTERM,))
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:      # the publisher died before the line above
        return
    try:
        os.nice(CONTROL_NICE)
    except OSError:
        pass
    sock = _bind_control_socket(config.control_url, stop)
    if sock is None:
        return
    try:
        while not stop.is_set():
            control.ControlServer(opener, config.name, epoch, kinds, sock, _Halt(stop, channel),
                                  sealer_of(config)).run()   # closes its connections
            message = _next_message(channel, stop)
            if message is None:
                return
            if message[0] == "release":
                channel.send(("released",))
                message = _next_message(channel, stop)
            if message is None or message[0] != "reopen":
                return
            _op, epoch, kinds = message
    finally:
        sock.close()


class ControlProcess:
    """The control server in a forked child, with a pipe to tell it to let go of the
    database and to open it again."""

    def __init__(self, opener: SourceOpener, config: PublisherConfig, epoch: str,
                 kinds: list[str]):
        self.args = (opener, config, epoch, kinds)
        self.proc: multiprocessing.Process | None = None
        self.channel = None

    def start(self) -> None:
        context = multiprocessing.get_context("fork")
        ours, theirs = context.Pipe()
        self.proc = context.Process(target=_control_main,
                                    args=self.args + (theirs, os.getpid()),
                                    name="cell-control", daemon=True)
        start_forked(self.proc)
        theirs.close()
        self.channel = ours

    def alive(self) -> bool:
        return self.proc is not None and self.proc.is_alive()

    def exitcode(self) -> int | None:
        return self.proc.exitcode if self.proc is not None else None

    def release(self, timeout: float, stop: threading.Event) -> bool:
        """Ask the server to close its connections; True once it says it has (it
        finishes the request it is serving first)."""
        deadline = time.monotonic() + timeout
        try:
            self.channel.send(("release",))
            while not stop.is_set() and time.monotonic() < deadline:
                if self.channel.poll(CHANNEL_POLL_SECONDS):
                    return self.channel.recv() == ("released",)
        except (OSError, EOFError):
            pass
        return False

    def reopen(self, epoch: str, kinds: list[str]) -> bool:
        if not self.alive():
            return False
        try:
            self.channel.send(("reopen", epoch, kinds))
            return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(CONTROL_STOP_SECONDS)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join(CONTROL_STOP_SECONDS)
        self.proc = None
        if self.channel is not None:
            self.channel.close()
            self.channel = None


class ControlThread:
    """The control server in a thread of the publisher, on the publisher's REP socket."""

    def __init__(self, opener: SourceOpener, config: PublisherConfig, epoch: str,
                 kinds: list[str], sock: nanomsg.Socket):
        self.opener = opener
        self.config = config
        self.epoch = epoch
        self.kinds = kinds
        self.sock = sock
        self.halt = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.halt = threading.Event()
        server = control.ControlServer(self.opener, self.config.name, self.epoch,
                                       self.kinds, self.sock, self.halt,
                                       sealer_of(self.config))
        self.thread = threading.Thread(target=server.run, name="cell-control", daemon=True)
        self.thread.start()

    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def release(self, timeout: float, stop: threading.Event) -> bool:
        """Stop the server (it closes its connections). A thread cannot be killed:
        waits for the request it serves, so that two servers never share the socket."""
        self.halt.set()
        if self.thread is not None:
            self.thread.join()
        return True

    def reopen(self, epoch: str, kinds: list[str]) -> bool:
        self.epoch, self.kinds = epoch, kinds
        self.start()
        return True

    def stop(self) -> None:
        self.halt.set()
        if self.thread is not None:
            self.thread.join(timeout=CONTROL_STOP_SECONDS)


def _stop_on_signals(stop: threading.Event, signums) -> dict:
    """Set ``stop`` on any of ``signums``; return the handlers replaced. A signal the
    process inherited as ignored stays ignored (a supervised child ignores Ctrl-C).
    The handler ignores further signals before it sets the event: a second signal
    arriving inside Event.set() would otherwise run a nested handler that waits
    forever on the lock the first one holds."""
    def handle(signum, frame):
        for other in signums:
            signal.signal(other, signal.SIG_IGN)
        stop.set()

    previous = {}
    for signum in signums:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            previous[signum] = signal.signal(signum, handle)
    return previous


def run_publisher(config: PublisherConfig, stop: threading.Event | None = None) -> None:
    """Run until ``stop`` is set (or SIGTERM / SIGINT when called on the main thread)."""
    check_nanomsg()
    stop = stop or threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = _stop_on_signals(stop, (signal.SIGTERM, signal.SIGINT))
    try:
        Publisher(config, stop).run()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m replica.cell.publisher",
                                     description="Publish a cell database's change feed.")
    parser.add_argument("--db", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--feed", required=True, help="PUB url, e.g. tcp://127.0.0.1:7001")
    parser.add_argument("--control", required=True, help="REP url")
    parser.add_argument("--retention-events", type=int, default=100_000)
    parser.add_argument("--retention-seconds", type=float, default=3600.0)
    parser.add_argument("--heartbeat", type=float, default=1.0)
    parser.add_argument("--batch-max", type=int, default=500)
    parser.add_argument("--control-thread", action="store_true",
                        help="serve control requests from a thread, not a child process")
    parser.add_argument("--api-db", help="Nova's API database (SQLite) beside the cell's")
    parser.add_argument("--service-down-time", type=float, default=0.0)
    parser.add_argument("--neutron-url")
    parser.add_argument("--key-file", help="seal the feed and control with this key file")
    parser.add_argument("--authenticate-only", action="store_true",
                        help="with --key-file: authenticate, do not encrypt")
    parser.add_argument("--init", action="store_true", help="create the database / outbox first")
    parser.add_argument("--flavors", action="store_true", help="with --init: a flavor source")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.init:
        from replica.cell.outbox import init_cell_db     # a SQLite cell database
        init_cell_db(args.db, args.name, flavors=args.flavors)
    run_publisher(PublisherConfig(args.db, args.name, args.feed, args.control,
                                  args.retention_events, args.retention_seconds,
                                  args.heartbeat, args.batch_max,
                                  control_process=not args.control_thread,
                                  api_db=args.api_db,
                                  service_down_time=args.service_down_time,
                                  neutron_url=args.neutron_url,
                                  key_file=args.key_file,
                                  encrypt=not args.authenticate_only))
    return 0


if __name__ == "__main__":
    sys.exit(main())
