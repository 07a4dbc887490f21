"""The cell publisher: tails the outbox, publishes batches and heartbeats on a
nanomsg PUB socket, and answers control requests on a REP socket.

Threads and processes: the main loop tails and publishes; a pruner thread trims
the outbox to its retention; the control server (``control.py``) answers requests
with its own connections in a child process of its own (forked at start, with its
REP socket; it dies with the publisher). None of them waits on another: they share
no connection and SQLite runs in WAL mode, so reads never wait for the cell's
writers. The control server has its own process, not a thread, because building a
snapshot page or a replay is CPU-bound Python: in a thread it would hold the GIL
that the live feed needs between every row it reads, and live batches would go out
hundreds of milliseconds late during a resync. Called from a thread other than the
main one (where forking is unsafe), or with ``control_process=False``, the control
server runs in a thread instead.

Tailing: the loop sleeps on inotify (``watcher.py``) until the WAL is written, and
re-checks shortly after each write (the commit becomes visible a moment after it),
checks ``PRAGMA data_version`` and reads every event after the last one it
published, in one read transaction per batch so that each entity is the state at
the batch's last seq. Each changed key is built once per batch; a key that appears
twice in a batch carries the same (latest) entity in both events. A batch is
capped by ``batch_max`` events and by bytes.

Restart: the publisher starts at the current head. Events committed while it was
down are not re-sent live; the next heartbeat carries the head, the appliance sees
the gap and replays it over the control socket.

Another database under the same name (a restored backup moved over the file): the
connections keep reading the file they opened, so the publisher compares the
path's (st_dev, st_ino) with the opened file's when inotify reports a file created
or moved in under that name, and on every slow poll; on the same polls it checks
that the epoch is still the one it publishes and that the outbox head has not gone
back. When the file changed it lets go of the old one everywhere (the control
server, the pruner, its own connection), removes the old file's ``-wal`` and
``-shm`` if they are still there (SQLite leaves them when the database was moved
away, and a new database opened next to them would take their pages for its own),
opens the new file and goes on from its head with its epoch: the first heartbeat
with that epoch makes the appliance resync. A file with the same epoch but an outbox
that went back (an older copy of the same cell) would reuse seqs for other changes,
so it is given a new epoch. The cell's own writers must be stopped while the file is
replaced: SQLite cannot keep apart two databases that share one ``-wal``.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import json
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
import uuid as uuidlib
from dataclasses import dataclass

import apsw
import nanomsg

from replica import feed
from replica.cell import connection, control, entity, outbox, watcher

log = logging.getLogger("replica.cell.publisher")

SNDBUF_BYTES = 4 * 1024 * 1024
BATCH_MAX_BYTES = 3_500_000     # stay well under feed.MAX_MESSAGE_BYTES
SLOW_POLL_SECONDS = 0.5         # check the outbox and the file at least this often
PRUNE_INTERVAL_SECONDS = 5.0
ERROR_BACKOFF_SECONDS = 0.5
PUBLISH_ROUND_BATCHES = 20      # batches per round before the loop looks at its timers
OPEN_ATTEMPTS = 3               # the file replaced while it was being opened: again
RELEASE_SECONDS = 30.0          # the control server finishes its request and lets go
SIDE_FILES = ("-wal", "-shm")   # what SQLite keeps next to a WAL database
PUBLISHED_SUFFIX = ".published"  # beside the database: the last (epoch, seq) published


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
        self.conn: apsw.Connection | None = None
        self.files: dict[str, tuple[int, int] | None] = {}   # suffix -> identity at open
        self.open_error: str | None = None
        self._open()
        self.saved: tuple[str, int] | None = None     # what the published record says
        self.save_failed = False
        published = self._load_published()
        if published is not None and published[0] == self.epoch and self.last < published[1]:
            # Restarted on an older copy of the cell: its seqs after its head were
            # published already, for other changes.
            self._renew_epoch(published[1])
        self.data_version = None
        self.behind = False
        self.pub: nanomsg.Socket | None = None
        self.rep: nanomsg.Socket | None = None
        self.control: ControlProcess | ControlThread | None = None
        self.pruner: Pruner | None = None

    # -- the database file -------------------------------------------------

    def _open(self) -> None:
        """Open the file the path names now: connection, epoch, kinds, head, and the
        identities of the database and its side files (SQLite creates those when it
        opens a WAL database). Raises LookupError for a database without an outbox."""
        path = self.config.db
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
                kinds = entity.kinds_of(conn)
                head = outbox.outbox_head(conn)
            except BaseException:
                self._close(conn, files)
                raise
            if before is not None and watcher.file_identity(path) == before:
                break
            self._close(conn, files)
            if attempt == OPEN_ATTEMPTS - 1:
                raise apsw.CantOpenError(f"{path}: replaced over and over while opening")
        self.conn, self.files = conn, files
        self.epoch, self.kinds, self.last = epoch, kinds, head
        self.data_version = None
        self.behind = False

    def _close(self, conn: apsw.Connection, files: dict) -> None:
        """Close a connection to the database; when the file was moved away meanwhile,
        remove the -wal and -shm it leaves behind. SQLite neither checkpoints nor
        removes them for a database that was moved (they might be another file's by
        now), and left there they would be read as the new file's own."""
        conn.close()
        if watcher.file_identity(self.config.db) == files[""]:
            return
        for suffix in SIDE_FILES:
            path = self.config.db + suffix
            if files.get(suffix) is not None and watcher.file_identity(path) == files[suffix]:
                try:
                    os.unlink(path)
                    log.info("removed %s of the replaced database", path)
                except FileNotFoundError:
                    pass

    def source_changed(self) -> str | None:
        """Why the database has to be opened again, or None: the path names another
        file, the epoch changed in place, or the outbox went back."""
        now = watcher.file_identity(self.config.db)
        if now is None:
            return None      # gone (or being replaced right now): keep the open file
        if now != self.files[""]:
            return f"file replaced (inode {self.files[''][1]} -> {now[1]})"
        epoch = outbox.epoch_of(self.conn)
        if epoch != self.epoch:
            return f"epoch changed in place ({self.epoch[:8]} -> {epoch[:8]})"
        head = outbox.outbox_head(self.conn)
        if head < self.last:
            return f"outbox head went back from {self.last} to {head}"
        return None

    def reopen(self, why: str) -> bool:
        """Let go of the open database everywhere and open the one the path names.
        Returns False when it cannot be opened yet (the loop tries again)."""
        old_epoch, old_last, old_files = self.epoch, self.last, self.files
        if self.conn is not None:
            log.warning("%s: %s; opening it again", self.config.db, why)
            self._release()
            self._close(self.conn, old_files)
            self.conn = None
        try:
            self._open()
        except (apsw.Error, LookupError, OSError) as exc:
            if str(exc) != self.open_error:      # said once, tried every slow poll
                log.error("%s: cannot open the database: %s; trying again every %.1fs",
                          self.config.db, exc, SLOW_POLL_SECONDS)
                self.open_error = str(exc)
            return False
        self.open_error = None
        if self.epoch == old_epoch and self.last < old_last:
            try:
                self._renew_epoch(old_last)
            except apsw.Error as exc:     # a busy cell: the same checks again next poll
                log.error("%s: cannot give the rewound outbox a new epoch: %s; trying "
                          "again", self.config.db, exc)
                self._close(self.conn, self.files)
                self.conn, self.epoch, self.last = None, old_epoch, old_last
                return False
        self.stats.reopens += 1
        log.info("publishing %s epoch %s from seq %d (database opened again)",
                 self.config.name, self.epoch, self.last)
        self._start_readers()
        self.heartbeat()
        return True

    def _release(self) -> None:
        """Stop everything but the main loop from reading the open database."""
        if self.pruner is not None:
            self.pruner.stop()
            self.pruner = None
        if self.control is not None and not self.control.release(RELEASE_SECONDS, self.stop):
            log.warning("control server did not let go of the database; restarting it "
                        "in a thread")
            self.control.stop()
            self.control = None

    # -- what was published, across restarts ------------------------------------
    # A publisher started on an older copy of its cell (a restored backup, the same
    # epoch) would publish seqs that were published already for other changes, and a
    # replica would take them for duplicates. The last (epoch, seq) published is kept
    # in a small file beside the database, written at every heartbeat and at exit;
    # a head behind it at start means a new epoch (every replica then resyncs).

    def _published_path(self) -> str:
        return self.config.db + PUBLISHED_SUFFIX

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

    def save_published(self) -> None:
        """Record the last (epoch, seq) published, when it changed."""
        now = (self.epoch, self.last)
        if now == self.saved:
            return
        path = self._published_path()
        try:
            with open(path + ".tmp", "w", encoding="utf-8") as f:
                json.dump({"epoch": now[0], "seq": now[1]}, f)
            os.replace(path + ".tmp", path)
        except OSError as exc:
            if not self.save_failed:            # said once, tried at every heartbeat
                log.warning("%s: cannot record the published position: %s", path, exc)
                self.save_failed = True
            return
        self.save_failed = False
        self.saved = now

    def _renew_epoch(self, old_last: int) -> None:
        """The same epoch with an outbox behind what was published: seqs would be used
        again for other changes. A new epoch makes every replica resync."""
        epoch = uuidlib.uuid4().hex
        with self.conn:
            self.conn.execute(f"UPDATE {outbox.META} SET value = ? WHERE name = 'epoch'",
                              (epoch,))
        log.warning("%s: outbox head %d is behind the published %d with the same epoch "
                    "(an older copy of this cell?): new epoch %s", self.config.db, self.last,
                    old_last, epoch)
        self.epoch = epoch

    def _start_readers(self) -> None:
        """The pruner, and the control server for the current epoch (forked at start,
        told to open again later, or a thread when it cannot be a process)."""
        self.pruner = Pruner(self.config, self.stats)
        self.pruner.start()
        if self.control is not None:
            if self.control.reopen(self.epoch, self.kinds):
                return
            self.control.stop()
        if self.rep is None:
            self.rep = open_control_socket(self.config.control_url)
        self.control = ControlThread(self.config, self.epoch, self.kinds, self.rep)
        self.control.start()

    # -- sockets -----------------------------------------------------------

    def open_sockets(self, control: bool = True) -> None:
        self.pub = nanomsg.Socket(nanomsg.PUB)
        self.pub.set_int_option(nanomsg.SOL_SOCKET, nanomsg.SNDBUF, SNDBUF_BYTES)
        self.pub.bind(self.config.feed_url)
        if control:
            self.rep = open_control_socket(self.config.control_url)

    def close(self) -> None:
        if self.conn is not None:
            self.save_published()
        for sock in (self.pub, self.rep):
            if sock is not None:
                sock.close()
        if self.conn is not None:
            self.conn.close()

    def send(self, data: bytes) -> None:
        try:
            self.pub.send(data, nanomsg.DONTWAIT)
        except nanomsg.NanoMsgAPIError as exc:
            # PUB drops for slow subscribers anyway; seqs make the loss visible.
            self.stats.send_errors += 1
            log.warning("feed send failed: %s", exc)

    # -- tail --------------------------------------------------------------

    def changed(self) -> bool:
        version = self.conn.execute("PRAGMA data_version").fetchone()[0]
        if version == self.data_version:
            return False
        self.data_version = version
        return True

    def publish_pending(self) -> int:
        """Publish the events after ``self.last``, up to PUBLISH_ROUND_BATCHES batches
        (``self.behind`` says whether more are waiting, so that heartbeats and the
        loop's other duties keep their pace under a flood); return how many went out."""
        sent = 0
        self.behind = False
        for _round in range(PUBLISH_ROUND_BATCHES):
            if self.stop.is_set():
                break
            if self.conn.in_transaction:     # left open by a failed read: start clean
                self.conn.execute("ROLLBACK")
            self.conn.execute("BEGIN")
            try:
                rows = outbox.read_events(self.conn, self.last, self.config.batch_max)
                if not rows:
                    return sent
                events = control.built_events(self.conn, rows)
            finally:
                self.conn.execute("ROLLBACK")
            data = feed.encode_batch(self.config.name, self.epoch, events)
            if len(data) <= BATCH_MAX_BYTES:     # the usual case: encoded once, not sized
                self.send(data)
                self.stats.batches += 1
            else:
                for chunk in self._chunks(events):
                    self.send(feed.encode_batch(self.config.name, self.epoch, chunk))
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
            size = len(event.entity or b"") + 64      # the entity's wire bytes
            if chunk and total + size > BATCH_MAX_BYTES:
                yield chunk
                chunk, total = [], 0
            chunk.append(event)
            total += size
        if chunk:
            yield chunk

    def heartbeat(self) -> None:
        oldest = outbox.outbox_oldest(self.conn)
        self.send(feed.encode_heartbeat(self.config.name, self.epoch, self.last, oldest,
                                        time.time()))
        self.stats.heartbeats += 1
        self.save_published()

    def run(self) -> None:
        # Fork first: before this process has sockets or threads of its own.
        if (self.config.control_process
                and threading.current_thread() is threading.main_thread()):
            self.control = ControlProcess(self.config, self.epoch, self.kinds)
            self.control.start()
        self.open_sockets(control=self.control is None)
        if self.control is None:
            self.control = ControlThread(self.config, self.epoch, self.kinds, self.rep)
            self.control.start()
        self.pruner = Pruner(self.config, self.stats)
        self.pruner.start()
        watch = watcher.CommitWatcher(self.config.db)
        log.info("publishing %s epoch %s from seq %d on %s (control %s, inotify %s)",
                 self.config.name, self.epoch, self.last, self.config.feed_url,
                 self.config.control_url, watch.native)
        next_hb = next_check = time.monotonic()
        try:
            while not self.stop.is_set():
                try:
                    self._step(watch, time.monotonic() >= next_check)
                    now = time.monotonic()
                    if now >= next_check:
                        next_check = now + SLOW_POLL_SECONDS
                    if now >= next_hb and self.conn is not None:
                        self.publish_pending()          # the heartbeat's head is what was sent
                        self.heartbeat()
                        next_hb = now + self.config.heartbeat_interval
                        self._check_control()
                except apsw.Error as exc:
                    # A database the cell is rebuilding, a full disk, I/O errors: nothing
                    # was marked published, so the same events go out once it reads again.
                    self.stats.read_errors += 1
                    self.data_version = None
                    log.warning("reading the outbox failed (%s); retrying", exc)
                    self.stop.wait(ERROR_BACKOFF_SECONDS)
                due = next_check if self.conn is None else min(next_hb, next_check)
                timeout = 0.0 if self.behind else due - time.monotonic()
                watch.wait(timeout)     # returns early on writes and for re-checks after them
        finally:
            self.stop.set()
            watch.close()
            if self.pruner is not None:
                self.pruner.stop()
            if self.control is not None:
                self.control.stop()
            self.close()

    def _step(self, watch: watcher.CommitWatcher, slow_poll: bool) -> None:
        """One turn of the loop: the file's identity when it may have changed, then
        whatever the outbox holds."""
        if self.conn is None:
            if slow_poll:
                self.reopen("not open")
            return
        if watch.replaced() or slow_poll:
            why = self.source_changed()
            if why is not None and not self.reopen(why):
                return
        if self.behind or self.changed():
            self.publish_pending()

    def _check_control(self) -> None:
        if isinstance(self.control, ControlProcess) and not self.control.alive():
            # Not forked again (this process has sockets and threads now): the
            # control server goes on in a thread.
            log.warning("control process exited (%s); serving control requests from a "
                        "thread", self.control.exitcode())
            self.control.stop()
            self.rep = self.rep or open_control_socket(self.config.control_url)
            self.control = ControlThread(self.config, self.epoch, self.kinds, self.rep)
            self.control.start()


class Pruner:
    """Trims the outbox to its retention now and every PRUNE_INTERVAL_SECONDS, with a
    connection of its own, in a thread; stopped (and its connection closed) when the
    database is opened again."""

    def __init__(self, config: PublisherConfig, stats: PublisherStats):
        self.config = config
        self.stats = stats
        self.halt = threading.Event()
        self.thread = threading.Thread(target=self.run, name="cell-prune", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.halt.set()
        self.thread.join()      # a prune call is bounded (outbox.PRUNE_CHUNK rows)

    def run(self) -> None:
        conn = connection.open_cell(self.config.db)
        try:
            while True:
                try:
                    while True:
                        removed = outbox.prune(conn, self.config.retention_events,
                                               self.config.retention_seconds)
                        self.stats.pruned += removed
                        if removed < outbox.PRUNE_CHUNK or self.halt.is_set():
                            break
                except Exception as exc:   # busy cell, disk full: try again next round
                    self.stats.prune_errors += 1
                    log.warning("outbox prune failed: %s", exc)
                if self.halt.wait(PRUNE_INTERVAL_SECONDS):
                    return
        finally:
            conn.close()


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


def _control_main(config: PublisherConfig, epoch: str, kinds: list[str], channel,
                  parent: int) -> None:
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
            control.ControlServer(config.db, config.name, epoch, kinds, sock,
                                  _Halt(stop, channel)).run()   # closes its connections
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

    def __init__(self, config: PublisherConfig, epoch: str, kinds: list[str]):
        self.args = (config, epoch, kinds)
        self.proc: multiprocessing.Process | None = None
        self.channel = None

    def start(self) -> None:
        context = multiprocessing.get_context("fork")
        ours, theirs = context.Pipe()
        self.proc = context.Process(target=_control_main,
                                    args=self.args + (theirs, os.getpid()),
                                    name="cell-control", daemon=True)
        self.proc.start()
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

    def __init__(self, config: PublisherConfig, epoch: str, kinds: list[str],
                 sock: nanomsg.Socket):
        self.config = config
        self.epoch = epoch
        self.kinds = kinds
        self.sock = sock
        self.halt = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.halt = threading.Event()
        server = control.ControlServer(self.config.db, self.config.name, self.epoch,
                                       self.kinds, self.sock, self.halt)
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
    parser.add_argument("--init", action="store_true", help="create the database / outbox first")
    parser.add_argument("--flavors", action="store_true", help="with --init: a flavor source")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.init:
        outbox.init_cell_db(args.db, args.name, flavors=args.flavors)
    run_publisher(PublisherConfig(args.db, args.name, args.feed, args.control,
                                  args.retention_events, args.retention_seconds,
                                  args.heartbeat, args.batch_max,
                                  control_process=not args.control_thread))
    return 0


if __name__ == "__main__":
    sys.exit(main())
