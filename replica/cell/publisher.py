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

Tailing: the loop sleeps on inotify (``watcher.py``) until the WAL is written,
checks ``PRAGMA data_version`` and reads every event after the last one it
published, in one read transaction per batch so that each entity is the state at
the batch's last seq. Each changed key is built once per batch; a key that appears
twice in a batch carries the same (latest) entity in both events. A batch is
capped by ``batch_max`` events and by bytes.

Restart: the publisher starts at the current head. Events committed while it was
down are not re-sent live; the next heartbeat carries the head, the appliance sees
the gap and replays it over the control socket.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass

import apsw
import msgpack
import nanomsg

from replica import feed
from replica.cell import connection, control, entity, outbox, watcher

log = logging.getLogger("replica.cell.publisher")

SNDBUF_BYTES = 4 * 1024 * 1024
BATCH_MAX_BYTES = 3_500_000     # stay well under feed.MAX_MESSAGE_BYTES
SLOW_POLL_SECONDS = 0.5         # check the outbox at least this often, whatever inotify says
PRUNE_INTERVAL_SECONDS = 5.0
ERROR_BACKOFF_SECONDS = 0.5
PUBLISH_ROUND_BATCHES = 20      # batches per round before the loop looks at its timers


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


def check_nanomsg() -> None:
    """nanomsg-python silently falls back to a ctypes build that fails at bind()."""
    if nanomsg.wrapper.__name__ != "_nanomsg_cpy":
        raise RuntimeError("nanomsg-python is the ctypes fallback build, not the C extension "
                           "(reinstall: pip install --no-cache-dir --no-binary nanomsg nanomsg)")


def _pack_size(obj) -> int:
    return len(msgpack.packb(obj, use_bin_type=True))


class Publisher:
    """One cell's publisher. ``run()`` returns when ``stop`` is set."""

    def __init__(self, config: PublisherConfig, stop: threading.Event):
        self.config = config
        self.stop = stop
        self.stats = PublisherStats()
        self.conn = connection.open_cell(config.db)      # sets WAL + busy timeout
        try:
            self.epoch = outbox.epoch_of(self.conn)
        except Exception:
            self.conn.close()
            raise LookupError(f"{config.db}: no outbox installed (init_cell_db first)") from None
        self.kinds = entity.kinds_of(self.conn)
        self.last = outbox.outbox_head(self.conn)
        self.data_version = None
        self.behind = False
        self.pub: nanomsg.Socket | None = None
        self.rep: nanomsg.Socket | None = None

    # -- sockets -----------------------------------------------------------

    def open_sockets(self, control: bool = True) -> None:
        self.pub = nanomsg.Socket(nanomsg.PUB)
        self.pub.set_int_option(nanomsg.SOL_SOCKET, nanomsg.SNDBUF, SNDBUF_BYTES)
        self.pub.bind(self.config.feed_url)
        if control:
            self.rep = open_control_socket(self.config.control_url)

    def close(self) -> None:
        for sock in (self.pub, self.rep):
            if sock is not None:
                sock.close()
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
                by_kind: dict[str, list[str]] = {}
                for _seq, kind, key in rows:
                    by_kind.setdefault(kind, []).append(key)
                built = {kind: entity.build(self.conn, kind, keys)
                         for kind, keys in by_kind.items()}
            finally:
                self.conn.execute("ROLLBACK")
            events = [control.make_event(seq, kind, key, built[kind].get(key))
                      for seq, kind, key in rows]
            for chunk in self._chunks(events):
                self.send(feed.encode_batch(self.config.name, self.epoch, chunk))
                self.stats.batches += 1
            self.stats.events += len(events)
            self.last = events[-1].seq
            sent += len(events)
        else:
            self.behind = True
        return sent

    def _chunks(self, events: list[feed.Event]):
        """Split a batch so that no message exceeds BATCH_MAX_BYTES."""
        sizes: dict[tuple, int] = {}
        chunk, total = [], 0
        for event in events:
            ident = (event.kind, event.key)
            if ident not in sizes:
                sizes[ident] = _pack_size(event.entity) + 64
            if chunk and total + sizes[ident] > BATCH_MAX_BYTES:
                yield chunk
                chunk, total = [], 0
            chunk.append(event)
            total += sizes[ident]
        if chunk:
            yield chunk

    def heartbeat(self) -> None:
        oldest = outbox.outbox_oldest(self.conn)
        self.send(feed.encode_heartbeat(self.config.name, self.epoch, self.last, oldest,
                                        time.time()))
        self.stats.heartbeats += 1

    def run(self) -> None:
        # Fork first: before this process has sockets or threads of its own.
        child = None
        if (self.config.control_process
                and threading.current_thread() is threading.main_thread()):
            child = ControlProcess(self.config, self.epoch, self.kinds)
            child.start()
        self.open_sockets(control=child is None)
        threads = [threading.Thread(target=self.prune_loop, name="cell-prune", daemon=True)]
        if child is None:
            server = control.ControlServer(self.config.db, self.config.name, self.epoch,
                                           self.kinds, self.rep, self.stop)
            threads.append(threading.Thread(target=server.run, name="cell-control",
                                            daemon=True))
        for thread in threads:
            thread.start()
        watch = watcher.CommitWatcher(self.config.db)
        log.info("publishing %s epoch %s from seq %d on %s (control %s, inotify %s)",
                 self.config.name, self.epoch, self.last, self.config.feed_url,
                 self.config.control_url, watch.native)
        next_hb = time.monotonic()
        woke = True
        try:
            while not self.stop.is_set():
                try:
                    if self.behind or self.changed():
                        self.publish_pending()
                    elif woke:
                        self._settle()
                    now = time.monotonic()
                    if now >= next_hb:
                        self.publish_pending()          # the heartbeat's head is what was sent
                        self.heartbeat()
                        next_hb = now + self.config.heartbeat_interval
                        if child is not None and not child.alive():
                            # Not forked again (this process has sockets and threads
                            # now): the control server goes on in a thread.
                            log.warning("control process exited (%s); serving control "
                                        "requests from a thread", child.proc.exitcode)
                            child.stop()
                            child = None
                            self.rep = open_control_socket(self.config.control_url)
                            server = control.ControlServer(self.config.db, self.config.name,
                                                           self.epoch, self.kinds, self.rep,
                                                           self.stop)
                            threads.append(threading.Thread(target=server.run,
                                                            name="cell-control", daemon=True))
                            threads[-1].start()
                except apsw.Error as exc:
                    # A database the cell is rebuilding, a full disk, I/O errors: nothing
                    # was marked published, so the same events go out once it reads again.
                    self.stats.read_errors += 1
                    self.data_version = None
                    log.warning("reading the outbox failed (%s); retrying", exc)
                    self.stop.wait(ERROR_BACKOFF_SECONDS)
                timeout = 0.0 if self.behind else min(next_hb - time.monotonic(),
                                                      SLOW_POLL_SECONDS)
                woke = watch.wait(timeout)
        finally:
            self.stop.set()
            watch.close()
            if child is not None:
                child.stop()
            for thread in threads:
                thread.join(timeout=5)
            self.close()

    def _settle(self) -> None:
        """A wake with no new commit visible: the WAL index is updated after the
        write inotify reported, so look again a few times within milliseconds."""
        for delay in watcher.SETTLE_DELAYS:
            if self.stop.wait(delay):
                return
            if self.changed():
                self.publish_pending()
                return

    # -- retention ---------------------------------------------------------

    def prune_loop(self) -> None:
        """Trim the outbox to its retention now and every PRUNE_INTERVAL_SECONDS."""
        conn = connection.open_cell(self.config.db)
        try:
            while True:
                try:
                    while True:
                        removed = outbox.prune(conn, self.config.retention_events,
                                               self.config.retention_seconds)
                        self.stats.pruned += removed
                        if removed < outbox.PRUNE_CHUNK or self.stop.is_set():
                            break
                except Exception as exc:   # busy cell, disk full: try again next round
                    self.stats.prune_errors += 1
                    log.warning("outbox prune failed: %s", exc)
                if self.stop.wait(PRUNE_INTERVAL_SECONDS):
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


def _control_main(config: PublisherConfig, epoch: str, kinds: list[str]) -> None:
    """The control server's process: answers until SIGTERM, or until the publisher
    dies (PR_SET_PDEATHSIG: a SIGKILLed publisher leaves no orphan holding its port)."""
    stop = threading.Event()
    signal.signal(signal.SIGINT, signal.SIG_IGN)      # the publisher handles Ctrl-C
    _stop_on_signals(stop, (signal.SIGTERM,))
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:       # the publisher died before the line above
        return
    try:
        os.nice(CONTROL_NICE)
    except OSError:
        pass
    sock = open_control_socket(config.control_url)
    try:
        control.ControlServer(config.db, config.name, epoch, kinds, sock, stop).run()
    finally:
        sock.close()


class ControlProcess:
    """The control server in a forked child."""

    def __init__(self, config: PublisherConfig, epoch: str, kinds: list[str]):
        self.args = (config, epoch, kinds)
        self.proc: multiprocessing.Process | None = None

    def start(self) -> None:
        context = multiprocessing.get_context("fork")
        self.proc = context.Process(target=_control_main, args=self.args,
                                    name="cell-control", daemon=True)
        self.proc.start()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.is_alive()

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
