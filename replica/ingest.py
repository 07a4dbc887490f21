"""Ingest: the replica's single writer.

One gevent process. Per configured feed: a SUB greenlet that receives and accepts
events, and a driver greenlet that owns the feed's link state and its control REQ
socket (hello, replay, snapshot, digest). Accepted events of every feed are collected
and group-committed with their positions in one transaction.

The link is a state machine: named events (replica.states.LinkEvent) move it along
the edges of one table (replica.states.EDGES), through one function (Ingest.apply).
Errors say what the driver does (replica.link_errors: retry, replay, resync, give up).

Who may change what:
- only a feed's driver greenlet applies events to its link; the SUB greenlet and the
  committer post events (gap seen, store failed, epoch claimed) to the link's inbox
  and kick the driver;
- nothing yields inside a transaction, so greenlets never interleave statements.

A feed with a key file (``CellFeed.key_file``, ``sealing.py``): every feed message
must open under one of its keys, bound to the feed's cell name, before it is decoded;
one that does not is dead-lettered ``bad_signature`` and the feed goes on. Its control
requests are sealed and their replies must open (``Requester``). A feed without one
takes plain messages (a warning at start, status ``auth: none``) and dead-letters
sealed ones: a cell and an appliance that disagree never apply anything.
"""

from __future__ import annotations

import argparse
import collections
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import apsw
import gevent
import gevent.event
import gevent.lock
import msgpack
import nanomsg

from replica import drift, feed, kinds, resync, sealing, states
from replica.ingest_control import (ControlTimeout, Job, JobBoard, RequestError, Requester,
                                    _recv, serve_control)
from replica.key_file import sealer_for
from replica.link_errors import GiveUp, Replay, Resync, Retry, classify
from replica.position import Position
from replica.states import Action, CellState, LinkEvent, TransitionError, transition
from replica.store import connection
from replica.store.writer import Change, DeadLetter, Writer

log = logging.getLogger("replica.ingest")

MIB = 1024 * 1024
CONTROL_TIMEOUT = 10.0         # a cell control request (replay, snapshot page, digest):
                               # only the feed's own driver waits, never ingest as a whole
HELLO_TIMEOUT = 2.0            # hello is cheap: a cell that does not answer it is away
REPLAY_LIMIT_MIN = 100         # a replay that timed out is asked again, halved, down to this
RETRY_MIN = 0.1                # back-off after a failed control request
RETRY_MAX = 2.0
GIVE_UP_RETRY = 30.0           # a cell that does not match (GiveUp) is asked again this late
HEARTBEAT_GAP_GRACE = 0.3      # heartbeat head ahead and no batch for this long: tail loss
RESYNC_BUFFER_MAX = 200_000    # live events kept during a resync; beyond, replay covers them
RESYNC_BURST = 3               # a cell is resynced on its own at most this many times
RESYNC_WINDOW = 60.0           # ... within this many seconds
EPOCH_CLAIMS_MAX = 100         # feed messages of another epoch kept until hello judges them
CLAIMS_JUDGED_EVERY = 1.0      # at most one hello a second for them (a flood of strays)
CHECKPOINT_INTERVAL = 1.0
CHECKPOINT_BUSY_MS = 100       # the checkpointer waits this long for a reader or the writer
RESTART_RETRY = 0.25           # after readers kept the WAL from starting over, retry this late
DRIVER_TICK = 0.25             # a quiet driver re-checks silence this often
YIELD_SECONDS = 0.001
BUSY_SLICE = 0.02              # a busy feed lets the other greenlets run this often
STOP_POLL = 0.1
SILENCE_RECHECK = 0.05
STORE_RETRY_MIN = 0.5          # after a failed commit (a full disk...), writes wait this long,
STORE_RETRY_MAX = 5.0          # doubling up to this, before the next try
STORE_LOG_EVERY = 60.0         # while commits keep failing, one log line this often
PENDING_DEAD_MAX = 1000        # dead letters kept for a store that cannot write them


def _recv_now(sock: nanomsg.Socket) -> bytes | None:
    """The next message if one is already waiting, else None."""
    try:
        return sock.recv(flags=nanomsg.DONTWAIT)
    except nanomsg.NanoMsgAPIError as exc:
        if exc.errno != nanomsg.EAGAIN:
            raise
        return None


def _quietly(step, *args):
    """``step(*args)`` in gevent's thread pool (a checkpoint, a flush to disk): its
    result, or its error, which is returned, not raised (the pool prints a traceback
    for every exception raised in it; on a full disk that was one a second)."""
    try:
        return step(*args)
    except (apsw.Error, OSError) as exc:
        return exc


@dataclass(frozen=True)
class CellFeed:
    name: str
    feed_url: str
    control_url: str
    key_file: str | None = None     # None: unauthenticated


@dataclass
class IngestConfig:
    replica_path: str
    cells: list[CellFeed]
    control_url: str
    group_commit_ms: float = 0.0
    group_commit_max: int = 5000
    stale_after: float = 5.0
    replay_limit: int = 5000
    rcvbuf: int = 4 * MIB
    # nanomsg's own limit. A message over it stops the connection without an error
    # (nothing more is delivered on it): it sits well above feed.MAX_MESSAGE_BYTES, so
    # what a cell might send is received and dead-lettered as ``oversized``, and a feed
    # silent for half of stale_after is subscribed again (_read_feed).
    rcvmaxsize: int = 64 * MIB
    control_timeout: float = CONTROL_TIMEOUT


class CellFault(Retry):
    """A cell answered with something ingest cannot use; retried with back-off."""


@dataclass
class CellRequest:
    """A resync or verify asked of one feed by a job."""

    kind: str                  # "resync" | "verify"
    job: Job
    repair: bool = False
    done: int = 0
    total: int = 0
    result: gevent.event.AsyncResult = field(default_factory=gevent.event.AsyncResult)


class CellLink:
    """Everything ingest knows about one feed."""

    def __init__(self, feed_cfg: CellFeed, position: Position | None, control_timeout: float):
        self.feed = feed_cfg
        self.name = feed_cfg.name
        self.state = CellState.CONNECTING
        self.state_since = time.time()
        self.position = position            # accepted (committed or queued for commit)
        self.head = position.seq if position else 0
        self.oldest = 0
        self.kinds: list[str] = [feed.KIND_SERVER]
        self.last_heard = time.monotonic()  # any message or control reply
        self.last_batch = 0.0               # monotonic time of the last feed batch
        self.last_event_at: float | None = None
        self.behind_since: float | None = None
        self.live_once = False
        self.gaps = self.replays = self.resyncs = self.dead_letters = 0
        self.resync_failures = 0
        self.error: str | None = None
        # an unusable key file refuses this feed's messages, not ingest's start
        self.sealer = sealer_for(feed_cfg.name, feed_cfg.key_file, tolerate_errors=True)
        self.control = Requester(feed_cfg.control_url, control_timeout, sealer=self.sealer)
        self.kick = gevent.event.Event()
        # events posted by the SUB greenlet and the committer, applied by the driver:
        # (event, reason, data), one of each kind at most (an epoch claim: each, bounded)
        self.inbox: collections.deque[tuple[LinkEvent, str, Any]] = collections.deque()
        self.last_event: str | None = None      # the last event applied ...
        self.last_edge_at: float | None = None  # ... and when (wall time)
        self.edge_counts: collections.Counter = collections.Counter()  # (state, event)
        # while a snapshot is taken (resync.resync_cell): live batches kept for after
        # the swap; None otherwise
        self.buffer: list[feed.Batch] | None = None
        self.buffered_events = 0
        # while verifying: live events are not applied (replayed afterwards)
        self.paused = False
        self.requests: list[CellRequest] = []
        self.replay_limit: int | None = None   # lowered after timeouts, see replay_page
        # feed messages of another epoch than the position's, taken from the inbox:
        # (epoch, payload), until the cell's hello says whether the cell really moved
        # (resync) or they are strays
        self.held_claims: list[tuple[str, bytes]] = []
        self.claims_judged_at = 0.0            # monotonic time of the last hello for them
        self.resync_reason: str | None = None  # why the last resync began
        self.resync_ends: collections.deque = collections.deque(maxlen=RESYNC_BURST)  # monotonic

    def follow(self, event: LinkEvent, edge: states.Edge, reason: str = "") -> None:
        """Move along ``edge`` (taken by ``event``): the state, its time, the reason of a
        resync, the last event and the edge's count. Only Ingest.apply calls this."""
        before, new = self.state, edge.next
        self.edge_counts[(before, event)] += 1
        self.last_event, self.last_edge_at = event.value, time.time()
        why = reason or edge.why
        if new is before:
            log.debug("cell %s: %s in %s (%s)", self.name, event.value, before.value, why)
            return
        self.state, self.state_since = new, self.last_edge_at
        if new is CellState.RESYNCING:
            self.resync_reason = reason or edge.why
        log.info("cell %s: %s -> %s on %s (%s)", self.name, before.value, new.value,
                 event.value, why)

    def set_state(self, new: CellState, why: str = "") -> None:
        """Place the link in ``new`` directly (tests, benchmarks): the edge must be in
        the table; no event is recorded and no action runs. Ingest itself only moves
        a link through Ingest.apply."""
        if new is self.state:
            return
        self.state = transition(self.state, new)
        self.state_since = time.time()
        if new is CellState.RESYNCING:
            self.resync_reason = why
        log.info("cell %s: %s%s", self.name, new.value, f" ({why})" if why else "")

    def post(self, event: LinkEvent, reason: str = "", data: Any = None) -> None:
        """Leave ``event`` for the driver and wake it. The SUB greenlet and the committer
        post; only the driver applies. An event already waiting is not posted twice;
        epoch claims are kept up to EPOCH_CLAIMS_MAX."""
        if event not in states.POSTED_EVENTS:
            raise TransitionError(f"event {event.value} is not posted, it is the driver's")
        if event is LinkEvent.EPOCH_CLAIMED:
            if len(self.epoch_claims) < EPOCH_CLAIMS_MAX:
                self.inbox.append((event, reason, data))
        elif not any(waiting is event for waiting, _, _ in self.inbox):
            self.inbox.append((event, reason, data))
        self.kick.set()

    def claim_epoch(self, epoch: str, payload: bytes) -> None:
        """A feed message says the cell is at another epoch: have the driver ask the
        cell's hello before anything is thrown away (anyone who reaches the feed's
        address can send one)."""
        self.post(LinkEvent.EPOCH_CLAIMED, f"a feed message of epoch {epoch!r}",
                  (epoch, bytes(payload[:4096])))

    @property
    def epoch_claims(self) -> list[tuple[str, bytes]]:
        """Feed messages of another epoch not judged yet: (epoch, payload)."""
        return self.held_claims + [data for event, _, data in self.inbox
                                   if event is LinkEvent.EPOCH_CLAIMED]

    @property
    def gap_flag(self) -> bool:
        """A gap (or a failed commit) waits for the driver."""
        return any(event in (LinkEvent.GAP_SEEN, LinkEvent.STORE_FAILED)
                   for event, _, _ in self.inbox)

    @property
    def new_epoch_flag(self) -> bool:
        """The link resyncs because the cell's hello confirmed feed messages of another
        epoch (those messages alone never start a resync)."""
        return (self.state is CellState.RESYNCING
                and self.last_event == LinkEvent.EPOCH_CHANGED.value)

    @property
    def buffering(self) -> bool:
        """Live batches are kept for after the swap while a snapshot is taken."""
        return self.buffer is not None

    def heard(self) -> None:
        self.last_heard = time.monotonic()

    def note_lag(self) -> None:
        seq = self.position.seq if self.position else 0
        if self.head > seq:
            if self.behind_since is None:
                self.behind_since = time.monotonic()
        else:
            self.behind_since = None

    def status(self, counts: dict[str, int], committed: Position | None = None) -> dict:
        """``committed``: show this position instead of the accepted one."""
        seq = (committed or self.position).seq if (committed or self.position) else 0
        lag_ms = 0.0
        if self.behind_since is not None and self.head > seq:
            lag_ms = round((time.monotonic() - self.behind_since) * 1000.0, 1)
        return {
            "cell": self.name, "state": self.state.value, "state_since": self.state_since,
            "epoch": self.position.epoch if self.position else None, "seq": seq,
            "head": self.head, "oldest": self.oldest, "lag_events": max(self.head - seq, 0),
            "lag_ms": lag_ms,
            **{label: counts.get(name, 0) for name, label in _COUNT_LABELS.items()},
            "last_event_at": self.last_event_at,
            "live_once": self.live_once, "gaps": self.gaps, "replays": self.replays,
            "resyncs": self.resyncs, "resync_failures": self.resync_failures,
            "dead_letters": self.dead_letters, "error": self.error,
            "resync_reason": self.resync_reason,
            "auth": "none" if self.sealer is None else sealing.ALGORITHM,
            # the ids of the key file's keys, the one that seals first
            "auth_keys": [] if self.sealer is None else self.sealer.key_ids(),
        }

    def edges_status(self) -> dict:
        """The last event applied, when, and how often each edge was followed."""
        return {"last_event": self.last_event, "last_edge_at": self.last_edge_at,
                "edges": {f"{state.value}/{event.value}": n
                          for (state, event), n in sorted(self.edge_counts.items())}}


def open_feed_message(link: CellLink, frame: bytes) -> bytes:
    """The plain message of a sealed feed message, or AuthError."""
    if link.sealer is None:
        raise sealing.AuthError("the cell seals its feed and no key file is configured "
                                "for it here")
    return link.sealer.open_feed(frame)


_COUNT_LABELS = kinds.count_labels()


def _default_renderer():
    from replica import render  # imported here, statically, so the frozen binary has it
    return render


class Ingest:
    """The running ingest: links, pending group, writer, jobs."""

    def __init__(self, config: IngestConfig, renderer=None):
        self.config = config
        self.render = renderer or _default_renderer()
        self.conn = connection.open_writer(config.replica_path)
        renderers = kinds.renderers(self.render)
        self._row_of = {name: row for name, (_columns, row) in renderers.items()}
        # Rows a publisher rendered are stored as they came only if made by this render.
        self.render_version = getattr(self.render, "RENDER_VERSION", None)
        self.writer = Writer(self.conn, *(renderers[name][0] for name in kinds.KINDS))
        positions = self.writer.load_positions()
        counts = self.writer.dead_letter_counts()
        self.links: dict[str, CellLink] = {}
        for cell in config.cells:
            link = CellLink(cell, positions.get(cell.name), config.control_timeout)
            link.dead_letters = counts.get(cell.name, 0)
            self.links[cell.name] = link
            if link.sealer is None:
                log.warning("cell %s: no key file: its feed and control are not "
                            "authenticated (anyone who reaches %s can feed this replica); "
                            "see docs/feed-authentication.md", cell.name, cell.feed_url)
        self.dead_total = sum(counts.values())
        self.pending: list[Change] = []
        self.pending_dead: list[DeadLetter] = []
        self.dirty: dict[str, Position] = {}
        self.events_applied = 0
        self.pending_events = 0      # events behind self.pending (duplicates collapsed)
        self.batches_committed = 0
        self.jobs = JobBoard()
        self._wake = gevent.event.Event()
        # The writer has one staging area: resyncs of several cells take turns.
        self._staging = gevent.lock.BoundedSemaphore(1)
        # The store failing to commit (a full disk, I/O errors) is a state: writes are
        # held and retried with back-off, status and metrics say so, the log now and then.
        self.store_failing_since: float | None = None   # wall time of the first failure
        self.store_error: str | None = None
        self.disk_full = False
        self._store_failures = 0
        self._store_backoff = STORE_RETRY_MIN
        self._store_retry_at = 0.0
        self._store_logged_at = 0.0
        self._greenlets: list[gevent.Greenlet] = []
        self.stopped = gevent.event.Event()
        # The WAL: its size after the last commit (the WAL hook), and the writes held
        # while the checkpointer makes it start over (see _checkpointer).
        self._frame_bytes = (self.conn.execute("PRAGMA page_size").fetchall()[0][0]
                             + connection.WAL_FRAME_HEADER_BYTES)
        self.wal_pages = 0
        # Frames of the WAL as it is now that a checkpoint has copied back into the
        # database file. A reader looks every page it reads up in the WAL's index first,
        # and a checkpoint takes a core while it copies: after a first load of a large
        # cell (a WAL of gigabytes) reads are slower until the backlog is copied.
        self.wal_copied = 0
        self._wal_big = gevent.event.Event()
        self._writes_open = gevent.event.Event()
        self._writes_open.set()
        self.wal_restarts = 0
        self.wal_restart_pause_max = 0.0     # seconds the writes were held, at most
        self.conn.set_wal_hook(self._after_commit)
        # what follows an edge of the link's table (replica.states.EDGES)
        self._actions = {
            Action.NONE: None,
            Action.COUNT_GAP: self._count_gap,
            Action.HOLD_EPOCH_CLAIM: self._hold_epoch_claim,
            Action.DEAD_LETTER_CLAIMS: self._dead_letter_claims,
            Action.FAIL_VERIFIES: self._fail_verifies,
            Action.APPLY_BUFFERED: self._apply_buffered,
        }

    # -- accepting and committing ---------------------------------------------------

    def change_of(self, cell: str, seq: int, kind: str, key: str, entity: dict | None,
                  entity_hash: int | None = None, row: list | None = None) -> Change:
        """An event as a replica change (renders upserts; may raise on a bad entity).
        ``entity``: a dict, or its bytes as the feed carried them (decoded and validated
        here); ``entity_hash``: of those bytes (None: computed). ``row``: the row the
        publisher rendered with this render's version: checked and taken as it is (the
        entity is then neither decoded nor rendered), FeedError ``bad_row`` if unfit."""
        if entity is None:
            return Change(kind, key, cell, None)
        if row is not None and entity_hash is not None:
            problem = self.writer.row_problem(kind, key, cell, seq, entity_hash, row)
            if problem is not None:
                raise feed.FeedError("bad_row", f"{cell} seq {seq}: pre-rendered row: "
                                                f"{problem}")
            return Change(kind, key, cell, row)
        if type(entity) is bytes:
            entity = feed.open_entity(kind, key, entity, f"{cell} seq {seq}")
        return Change(kind, key, cell, self._row_of[kind](cell, seq, entity, entity_hash))

    def rows_usable(self, batch: feed.Batch) -> bool:
        """Whether the rows a batch carries were rendered by this render's version."""
        return batch.render_version is not None and batch.render_version == self.render_version

    def accept(self, link: CellLink, events, payload: bytes = b"",
               rendered: bool = False) -> str:
        """Queue the events of one batch or replay page that follow the position.
        Returns "next", "duplicate", "gap", "refused" (dead-lettered, nothing queued) or
        "held" (the store cannot write now, see commit). ``rendered``: the events' rows,
        where they carry one, were rendered by this render's version (see change_of)."""
        if self.store_failing_since is not None and time.monotonic() < self._store_retry_at:
            return "held"      # the store cannot write now: nothing moves until it can
        pos = link.position
        fresh = [e for e in events if e.seq > pos.seq]
        if not fresh:
            return "duplicate"
        if fresh[0].seq != pos.seq + 1:
            return "gap"
        # Only the last event of an entity in a batch is rendered: each event carries the
        # whole entity, and the group commit writes only the last change of a key anyway
        # (one build of a server is several events of that server).
        last = {(e.kind, e.key): e for e in fresh}
        try:
            with feed.gc_paused():      # rows are acyclic: see feed.gc_paused
                changes = [self.change_of(link.name, e.seq, e.kind, e.key, e.entity,
                                          e.entity_hash, e.row if rendered else None)
                           for e in last.values()]
                for e in fresh:
                    # An earlier event of a key carries the same bytes as its last one
                    # (the publisher builds a key once per batch); other bytes are still
                    # checked, so a malformed event is refused even when superseded.
                    final = last[(e.kind, e.key)].entity
                    if e.entity is not final and type(e.entity) is bytes and e.entity != final:
                        feed.open_entity(e.kind, e.key, e.entity, f"{link.name} seq {e.seq}")
        except Exception as exc:  # a malformed entity, or one the render refused
            reason = exc.reason if isinstance(exc, feed.FeedError) else "bad_entity"
            self.dead_letter(link, link.name, reason,
                             f"apply batch (cell={link.name}, seq {fresh[0].seq}-"
                             f"{fresh[-1].seq}): {exc}", payload)
            return "refused"
        self.pending.extend(changes)
        self.pending_events += len(fresh)
        link.position = pos.advanced(fresh[-1].seq)
        self.dirty[link.name] = link.position
        link.last_event_at = time.time()
        link.head = max(link.head, link.position.seq)
        link.note_lag()
        if len(self.pending) >= self.config.group_commit_max:
            self.commit()
        else:
            self._wake.set()
        return "next"

    def dead_letter(self, link: CellLink | None, cell: str | None, reason: str, message: str,
                    payload: bytes) -> None:
        log.warning("dead letter (%s): %s", reason, message)
        self.pending_dead.append(DeadLetter(cell, reason, message, bytes(payload[:4096]),
                                            time.time()))
        if link is not None:
            link.dead_letters += 1
        self.dead_total += 1
        self._wake.set()

    def _after_commit(self, conn: apsw.Connection, db: str, pages: int) -> int:
        if pages < self.wal_pages:
            self.wal_copied = 0      # the WAL started over with this commit
        self.wal_pages = pages
        if pages * self._frame_bytes > connection.WAL_RESTART_BYTES:
            self._wal_big.set()
        return apsw.SQLITE_OK

    def commit(self) -> None:
        """Write everything pending, with the positions that cover it, in one transaction."""
        if not (self.pending or self.dirty or self.pending_dead):
            return
        self._writes_open.wait()     # the checkpointer is making the WAL start over
        changes, self.pending = self.pending, []
        events, self.pending_events = self.pending_events, 0
        positions, self.dirty = list(self.dirty.values()), {}
        dead, self.pending_dead = self.pending_dead, []
        try:
            self.writer.apply(changes, positions, dead)
        except apsw.Error as exc:
            # Nothing of the group is in the database: rewind those feeds to what is,
            # the next batch shows a gap and replay brings the events again.
            self._store_failed(exc, len(changes))
            self.pending_dead = (dead + self.pending_dead)[:PENDING_DEAD_MAX]
            stored = self.writer.load_positions()
            for pos in positions:
                link = self.links[pos.cell]
                link.position = stored.get(pos.cell)
                link.error = f"commit: {exc!r}"
                link.post(LinkEvent.STORE_FAILED, f"commit: {exc!r}")
            return
        if self.store_failing_since is not None:
            log.warning("replica store writes again after %.1fs (%d failed commits)",
                        time.time() - self.store_failing_since, self._store_failures)
            self.store_failing_since = self.store_error = None
            self.disk_full = False
            self._store_failures = 0
            self._store_backoff = STORE_RETRY_MIN
        self.events_applied += events
        self.batches_committed += 1

    def _store_failed(self, exc: apsw.Error, changes: int) -> None:
        now = time.monotonic()
        # SQLite rolls a transaction back by itself on SQLITE_FULL; the ROLLBACK of the
        # ``with`` block then fails too and hides the cause in __context__.
        cause = exc
        while cause is not None and not isinstance(cause, apsw.FullError):
            cause = cause.__context__
        self._store_failures += 1
        self.disk_full = cause is not None
        self.store_error = f"commit of {changes} changes: {cause or exc}"
        self._store_retry_at = now + self._store_backoff
        self._store_backoff = min(self._store_backoff * 2, STORE_RETRY_MAX)
        if self.store_failing_since is None:
            self.store_failing_since = time.time()
            self._store_logged_at = now
            log.error("replica store: %s; writes held, retried every %.1f-%.0fs",
                      self.store_error, STORE_RETRY_MIN, STORE_RETRY_MAX)
        elif now - self._store_logged_at >= STORE_LOG_EVERY:
            self._store_logged_at = now
            log.error("replica store still failing (%d commits since %s): %s",
                      self._store_failures, time.strftime(
                          "%H:%M:%S", time.gmtime(self.store_failing_since)), exc)

    def _committer(self) -> None:
        window = self.config.group_commit_ms / 1000.0
        while True:
            self._wake.wait()
            self._wake.clear()
            if window > 0:
                gevent.sleep(window)   # let more events join this group
            self.commit()

    # -- the feed (SUB) -----------------------------------------------------------------

    def _subscribe(self, link: CellLink) -> nanomsg.Socket:
        sock = nanomsg.Socket(nanomsg.SUB)
        sock.set_int_option(nanomsg.SOL_SOCKET, nanomsg.RCVBUF, self.config.rcvbuf)
        sock.set_int_option(nanomsg.SOL_SOCKET, nanomsg.RCVMAXSIZE, self.config.rcvmaxsize)
        sock.set_int_option(nanomsg.SOL_SOCKET, nanomsg.RECONNECT_IVL, 100)
        sock.set_int_option(nanomsg.SOL_SOCKET, nanomsg.RECONNECT_IVL_MAX, 1000)
        sock.set_string_option(nanomsg.SUB, nanomsg.SUB_SUBSCRIBE, b"")
        sock.connect(link.feed.feed_url)
        return sock

    def _read_feed(self, link: CellLink) -> None:
        sock = self._subscribe(link)
        silence = self.config.stale_after / 2
        said = False
        try:
            last_yield = time.monotonic()
            while True:
                data = _recv_now(sock)
                if data is None:
                    # The feed is idle: nothing more will join this group soon, so
                    # commit it now instead of at the end of the group-commit window.
                    self.commit()
                    try:
                        data = _recv(sock, time.monotonic() + silence)
                    except ControlTimeout:
                        # Publishers send heartbeats: a silent subscription may be a
                        # dead connection (see IngestConfig.rcvmaxsize). A new one
                        # costs nothing; what it missed, seqs and replay bring back.
                        (log.debug if said else log.warning)(
                            "feed %s: nothing received for %.1fs, subscribing again",
                            link.name, silence)
                        said = True
                        sock.close()
                        sock = self._subscribe(link)
                        continue
                said = False
                try:
                    self.on_message(link, data)
                except Exception as exc:  # a bug must cost one message, not the feed
                    log.exception("feed %s: message not handled", link.name)
                    self.dead_letter(link, link.name, "internal", f"feed {link.name}: {exc!r}",
                                     data)
                if time.monotonic() - last_yield > BUSY_SLICE:
                    # A busy feed must not hold the hub: other feeds, status and the
                    # committer run now. A real timer, not sleep(0), which only runs
                    # callbacks and leaves timers and I/O waiting.
                    gevent.sleep(YIELD_SECONDS)
                    last_yield = time.monotonic()
        finally:
            sock.close()

    def on_message(self, link: CellLink, data: bytes) -> None:
        """One message from a feed. Never raises: what cannot be used is dead-lettered."""
        sealed = data
        if link.sealer is not None or sealing.is_sealed(data):
            try:
                data = open_feed_message(link, data)
            except sealing.AuthError as exc:
                self.dead_letter(link, link.name, "bad_signature", f"feed {link.name}: {exc}",
                                 sealed)
                return
        try:
            msg = feed.decode_message(data, entities=False)    # opened one by one in accept
        except feed.FeedError as exc:
            self.dead_letter(link, link.name, exc.reason, f"feed {link.name}: {exc}", data)
            return
        if msg.cell != link.name:
            self.dead_letter(link, msg.cell, "unknown_cell",
                             f"feed {link.name}: message for cell {msg.cell!r}", data)
            return
        link.heard()
        if link.state is CellState.STALE:
            link.kick.set()
        if isinstance(msg, feed.Heartbeat):
            self._on_heartbeat(link, msg, data)
        else:
            self._on_batch(link, msg, data)

    def _on_heartbeat(self, link: CellLink, hb: feed.Heartbeat, data: bytes = b"") -> None:
        pos = link.position
        if link.state is CellState.RESYNCING or pos is None:
            return
        if hb.epoch != pos.epoch:
            link.claim_epoch(hb.epoch, data)
            return
        link.head = max(link.head, hb.head)
        link.oldest = hb.oldest
        link.note_lag()
        if link.state is not CellState.LIVE or link.paused:
            return
        # Ahead of us with no batch for a while: the tail of the feed was lost. Behind
        # us: a publisher restarted on an older copy of the cell, whose seqs would be
        # taken for duplicates; the catch-up asks the cell's head and resyncs if the
        # replica is ahead of it (a heartbeat sent before a replay's reply only costs
        # that question).
        lost_tail = (hb.head > pos.seq
                     and time.monotonic() - link.last_batch > HEARTBEAT_GAP_GRACE)
        if lost_tail:
            link.post(LinkEvent.GAP_SEEN, f"heartbeat head {hb.head} past {pos.seq}")
        elif hb.head < pos.seq:
            link.post(LinkEvent.GAP_SEEN, f"heartbeat head {hb.head} behind {pos.seq}")

    def _on_batch(self, link: CellLink, batch: feed.Batch, data: bytes) -> None:
        link.last_batch = time.monotonic()
        if link.buffering:
            if link.buffered_events + len(batch.events) <= RESYNC_BUFFER_MAX:
                link.buffer.append(batch)
                link.buffered_events += len(batch.events)
            return
        pos = link.position
        if link.paused or pos is None or link.state in (CellState.CONNECTING,
                                                        CellState.RESYNCING):
            return
        if batch.epoch != pos.epoch:
            link.claim_epoch(batch.epoch, data)
            return
        link.head = max(link.head, batch.last_seq)
        outcome = self.accept(link, batch.events, data, rendered=self.rows_usable(batch))
        if outcome == "gap" and link.state is CellState.LIVE:
            link.post(LinkEvent.GAP_SEEN, f"batch from {batch.first_seq} after "
                                          f"{link.position.seq}")

    # -- the driver: one greenlet per feed owns its state --------------------------------

    def request(self, link: CellLink, op: str, timeout: float | None = None, **args) -> dict:
        reply = link.control.request(op, timeout=timeout, **args)
        link.heard()
        return reply

    def apply(self, link: CellLink, event: LinkEvent, reason: str = "", data: Any = None
              ) -> CellState:
        """Apply ``event`` to ``link``: follow its edge in the table (log it, count it),
        then run the edge's action. A pair that is not in the table is a bug: said
        loudly, and raised (the driver logs it with its traceback and goes on)."""
        try:
            edge = states.edge(link.state, event)
        except TransitionError as exc:
            log.error("cell %s: BUG: %s (reason: %s)", link.name, exc, reason or "-")
            raise
        link.follow(event, edge, reason)
        action = self._actions[edge.action]
        if action is not None:
            action(link, reason, data)
        return link.state

    # the actions of the table's edges: (link, reason, data)

    def _count_gap(self, link: CellLink, reason: str, data: Any) -> None:
        link.gaps += 1

    def _hold_epoch_claim(self, link: CellLink, reason: str, data: Any) -> None:
        link.held_claims.append(data)

    def _dead_letter_claims(self, link: CellLink, reason: str, data: Any) -> None:
        epoch, claims = data
        for claimed, payload in claims:
            self.dead_letter(link, link.name, "foreign_epoch",
                             f"feed {link.name}: a message of epoch {claimed!r}; the cell's "
                             f"hello says {epoch!r}", payload)

    def _fail_verifies(self, link: CellLink, reason: str, data: Any) -> None:
        self._fail_requests(link, "verify", f"cell {link.name} is stale")

    def _apply_buffered(self, link: CellLink, reason: str, data: Any) -> None:
        resync.apply_buffered(self, link)

    # the driver's loop

    def _drive(self, link: CellLink) -> None:
        backoff = RETRY_MIN
        while True:
            try:
                try:
                    self._step(link)
                except Resync as exc:
                    self.apply(link, LinkEvent.POSITION_UNUSABLE, exc.reason)
                backoff = RETRY_MIN
            except Exception as exc:
                wait = self._step_failed(link, exc, backoff)
                link.kick.wait(timeout=wait)
                link.kick.clear()
                backoff = min(backoff * 2, RETRY_MAX)

    def _step_failed(self, link: CellLink, exc: Exception, backoff: float) -> float:
        """Say what failed (once, while it stays the same), follow the error's edge;
        returns how long the driver waits before its next step."""
        error = classify(exc)
        said = link.error
        link.error = error.reason if error is not None else (str(exc) or type(exc).__name__)
        if error is None:  # a bug or a database error: keep serving, keep trying, say so
            log.exception("cell %s: driver step failed", link.name)
            return backoff
        if isinstance(error, Replay):
            self._apply_quietly(link, LinkEvent.GAP_SEEN, error.reason)
        if isinstance(error, GiveUp):
            link.error = f"gave up: {error.reason}"
            if link.error != said:
                log.error("cell %s: %s; asked again in %.0fs or on a resync request",
                          link.name, link.error, GIVE_UP_RETRY)
            self._apply_quietly(link, LinkEvent.LINK_REFUSED, error.reason)
            deadline = time.monotonic() + GIVE_UP_RETRY
            while (not any(r.kind == "resync" for r in link.requests)
                   and time.monotonic() < deadline):
                link.kick.wait(timeout=deadline - time.monotonic())
                link.kick.clear()
            return 0
        if link.error != said:       # the same error again: once is enough
            log.warning("cell %s: %s", link.name, link.error)
        return backoff

    def _apply_quietly(self, link: CellLink, event: LinkEvent, reason: str) -> None:
        """apply, where an illegal pair must not end the driver (apply said it loudly)."""
        try:
            self.apply(link, event, reason)
        except TransitionError:
            pass

    def _silent(self, link: CellLink) -> bool:
        if time.monotonic() - link.last_heard <= self.config.stale_after:
            return False
        # Messages may be waiting in the socket while this process was busy: let the
        # feed's reader run before calling the cell silent.
        gevent.sleep(SILENCE_RECHECK)
        return time.monotonic() - link.last_heard > self.config.stale_after

    def _step(self, link: CellLink) -> None:
        """What the driver sees becomes events, the inbox is applied, then the state's
        work runs (its outcome is an event too)."""
        S, E = CellState, LinkEvent
        silent = self._silent(link)
        if silent and link.state in (S.CONNECTING, S.CATCHING_UP, S.LIVE):
            self.apply(link, E.HEARTBEAT_SILENT, f"nothing heard for {self.config.stale_after}s")
        if link.state is S.STALE and not silent:
            self.apply(link, E.HEARD_AGAIN if link.position is not None
                       else E.HEARD_AGAIN_UNPLACED, "heard again")
        while link.inbox:
            event, reason, data = link.inbox.popleft()
            self.apply(link, event, reason, data)
        self._drop_claims_of_own_epoch(link)
        if (link.held_claims and link.state in (S.CATCHING_UP, S.LIVE, S.STALE)
                and time.monotonic() - link.claims_judged_at >= CLAIMS_JUDGED_EVERY):
            self._judge_epoch_claims(link)
        if any(r.kind == "resync" for r in link.requests) and link.state is not S.RESYNCING:
            # A stale cell too: its control socket may answer while its feed is silent;
            # if it does not, the resync fails and says why.
            self.apply(link, E.RESYNC_REQUESTED, "requested")

        if link.state is S.CONNECTING:
            self._hello(link)
        elif link.state is S.CATCHING_UP:
            self._catch_up_page(link)
        elif link.state is S.RESYNCING:
            self._resync(link)
        elif link.state is S.LIVE and any(r.kind == "verify" for r in link.requests):
            self._verify(link)
        else:
            if link.state is S.STALE:
                self._fail_requests(link, None, f"cell {link.name} is stale")
            link.kick.wait(timeout=DRIVER_TICK)
            link.kick.clear()

    def _hello(self, link: CellLink) -> None:
        hello = self.request(link, "hello", timeout=HELLO_TIMEOUT)
        versions = hello.get("versions") or []
        if feed.FEED_VERSION not in versions:
            raise GiveUp(f"hello: cell speaks feed versions {versions}, "
                         f"this build {list(feed.FEED_VERSIONS)}")
        if hello.get("cell") != link.name:
            raise GiveUp(f"hello: control socket answers for cell {hello.get('cell')!r}")
        epoch, head, oldest = hello["epoch"], int(hello["head"]), int(hello["oldest"])
        link.kinds = list(hello.get("kinds") or [feed.KIND_SERVER])
        link.head, link.oldest = head, oldest
        link.error = None
        pos = link.position
        if pos is None:
            # A first attach always starts from a snapshot: a change log holds only what
            # changed since it was installed (rows that were there before are in no event).
            raise Resync("first attach")
        if pos.epoch != epoch:
            raise Resync(f"epoch {pos.epoch[:8]} -> {epoch[:8]}")
        if pos.seq < oldest - 1 and pos.seq < head:
            raise Resync(f"position {pos.seq} older than retention {oldest}")
        if pos.seq > head:
            raise Resync(f"replica at {pos.seq} ahead of the cell's head {head}")
        self.apply(link, LinkEvent.HELLO_OK, "hello")

    def _drop_claims_of_own_epoch(self, link: CellLink) -> None:
        """Claims of the epoch the link is at now claim nothing any more: they came in
        while the link moved to that epoch (during the hello that confirmed it, or held
        while a replay found the old one gone, through the snapshot). The snapshot and
        the replay after it cover their events; judged against the hello they would be
        taken for strays (``foreign_epoch``)."""
        if not link.held_claims or link.position is None:
            return
        epoch = link.position.epoch
        kept = [claim for claim in link.held_claims if claim[0] != epoch]
        if len(kept) < len(link.held_claims):
            log.info("cell %s: %d feed messages of epoch %s came before the link moved to "
                     "it: the snapshot and the replay cover them", link.name,
                     len(link.held_claims) - len(kept), epoch[:8])
            link.held_claims = kept

    def _judge_epoch_claims(self, link: CellLink) -> None:
        """Feed messages said the cell is at another epoch: the cell's hello decides.
        Another epoch there: resync. The same as ours: the messages were strays and
        are dead-lettered (``foreign_epoch``)."""
        link.claims_judged_at = time.monotonic()
        hello = self.request(link, "hello", timeout=HELLO_TIMEOUT)
        claims, link.held_claims = link.held_claims, []
        epoch = hello.get("epoch")
        if epoch != link.position.epoch:
            self.apply(link, LinkEvent.EPOCH_CHANGED, "new epoch")
        else:
            self.apply(link, LinkEvent.EPOCH_REFUTED, f"{len(claims)} strays", (epoch, claims))

    def replay_page(self, link: CellLink, upto: int | None = None) -> int:
        """One replay request from position + 1 (never past ``upto``); accept what comes.
        Returns the cell's head. Raises Resync when only a resync can help, Replay when
        the reply does not follow the position."""
        pos = link.position
        limit = link.replay_limit or self.config.replay_limit
        if upto is not None:
            limit = max(1, min(limit, upto - pos.seq))
        try:
            reply = self.request(link, "replay", epoch=pos.epoch, **{"from": pos.seq + 1},
                                 limit=limit)
        except feed.ControlError as exc:
            if exc.error in ("retention", "epoch"):
                raise Resync(f"replay from {pos.seq + 1}: {exc.error}") from None
            raise
        except ControlTimeout:
            # A busy cell builds fewer entities in time: ask for less next time.
            link.replay_limit = max(REPLAY_LIMIT_MIN, limit // 2)
            raise
        if link.replay_limit is not None:
            link.replay_limit = min(self.config.replay_limit, link.replay_limit * 2)
        link.replays += 1
        if reply.get("epoch") != pos.epoch:
            raise Resync(f"replay: epoch {reply.get('epoch')!r}")
        head = int(reply["head"])
        raw = reply.get("events") or []
        if raw:
            try:
                events = feed.decode_events(raw, f"replay {link.name} from {pos.seq + 1}",
                                            entities=False)
            except feed.FeedError as exc:
                self.dead_letter(link, link.name, exc.reason, str(exc),
                                 msgpack.packb(raw, use_bin_type=True)[:4096])
                raise CellFault(f"replay refused: {exc}") from None
            if upto is not None:
                events = tuple(e for e in events if e.seq <= upto)
            rv = reply.get("rv")
            outcome = self.accept(link, events, rendered=(
                rv is not None and rv == self.render_version))
            if outcome == "held":
                raise CellFault(f"replay from {pos.seq + 1} held: the replica store cannot "
                                f"write ({self.store_error})")
            if outcome == "refused":
                raise CellFault(f"replay from {pos.seq + 1}: refused (see dead letters)")
            if outcome == "gap":
                raise Replay(f"replay from {pos.seq + 1} began at {events[0].seq}")
        link.head = max(head, link.position.seq)
        link.note_lag()
        return head

    def _catch_up_page(self, link: CellLink) -> None:
        # The replica is ahead of the cell when it was past the head the reply reports
        # as it asked: live batches applied while the reply was on its way (a reply is
        # the state at its head, read a little earlier) are no sign of a rewound cell.
        asked_at = link.position.seq
        head = self.replay_page(link)
        if asked_at > head:
            raise Resync(f"replica at {asked_at} ahead of the cell's head {head}")
        link.error = None
        if link.position.seq >= head:
            self.commit()
            if not link.live_once:
                self.writer.mark_live(link.name)
            link.live_once = True
            self.apply(link, LinkEvent.REPLAY_DONE, f"caught up at {head}")

    def _resync(self, link: CellLink) -> None:
        waiting = [r for r in link.requests if r.kind == "resync"]
        held = 0.0
        if len(link.resync_ends) == RESYNC_BURST:
            held = link.resync_ends[0] + RESYNC_WINDOW - time.monotonic()
        if held > 0 and not waiting:
            # Whatever keeps asking for a resync of this cell (a flapping publisher, a
            # rogue feed), full snapshots are taken at most RESYNC_BURST times a window; a
            # burst is allowed, so a real epoch change right after a first attach waits
            # for nothing.
            link.error = (f"resync ({link.resync_reason}) held back {held:.1f}s: at most "
                          f"{RESYNC_BURST} per {RESYNC_WINDOW:.0f}s")
            link.kick.wait(timeout=held)
            link.kick.clear()
            return

        def progress(done: int, total: int) -> None:
            for r in waiting:
                r.done, r.total = done, total
                self._job_progress(r.job)

        try:
            with self._staging:
                resync.resync_cell(self, link, progress)
        except Exception as exc:
            log.warning("cell %s: resync failed: %r", link.name, exc)
            link.resync_failures += 1
            link.error = f"resync: {exc}"
            self._finish_requests(link, waiting, error=f"resync {link.name}: {exc}")
            self.apply(link, LinkEvent.SNAPSHOT_FAILED, "resync failed")
            # Whatever the failure, hello first again (then, maybe, another snapshot).
            raise Retry(link.error) from exc
        link.resyncs += 1
        link.resync_ends.append(time.monotonic())
        link.error = None
        self._finish_requests(link, waiting)
        self.apply(link, LinkEvent.SNAPSHOT_DONE, f"snapshot at {link.position.seq} swapped in")

    def _verify(self, link: CellLink) -> None:
        waiting = [r for r in link.requests if r.kind == "verify"]
        repair = any(r.repair for r in waiting)
        try:
            result = drift.verify_cell(self, link, repair=repair)
        except Exception as exc:   # the driver follows its class (a new epoch: resync)
            self._finish_requests(link, waiting, error=f"verify {link.name}: {exc}")
            raise
        for r in waiting:
            r.job.result.setdefault("cells", {})[link.name] = result
        self._finish_requests(link, waiting)
        if link.head > link.position.seq:
            self.apply(link, LinkEvent.HEAD_AHEAD, "after verify")
        else:
            self.apply(link, LinkEvent.VERIFY_DONE, "verify done")

    # -- jobs ---------------------------------------------------------------------------

    def _job_progress(self, job: Job) -> None:
        reqs = getattr(job, "_requests", [])
        job.done = sum(r.done for r in reqs)
        job.total = sum(r.total for r in reqs)

    def _finish_requests(self, link: CellLink, requests: list[CellRequest],
                         error: str | None = None) -> None:
        for r in requests:
            if r in link.requests:
                link.requests.remove(r)
            r.result.set(error)

    def _fail_requests(self, link: CellLink, kind: str | None, error: str) -> None:
        self._finish_requests(link, [r for r in link.requests if kind is None or r.kind == kind],
                              error)

    def start_job(self, kind: str, cell: Any, repair: bool = False) -> Job:
        if cell is None:
            names = list(self.links)
        elif isinstance(cell, str) and cell in self.links:
            names = [cell]
        else:
            raise RequestError("unknown_cell", f"no cell {cell!r}")
        job = self.jobs.add(Job(kind, names, repair=repair))
        if kind == "verify":
            job.total = len(names)
        reqs = [CellRequest(kind, job, repair) for _ in names]
        job._requests = reqs
        for name, req in zip(names, reqs):
            self.links[name].requests.append(req)
            self.links[name].kick.set()
        self._spawn(self._watch_job, job, reqs)
        return job

    def _watch_job(self, job: Job, reqs: list[CellRequest]) -> None:
        errors = []
        for req in reqs:
            error = req.result.get()
            if job.kind == "verify":
                job.done += 1
            else:
                self._job_progress(job)
            if error:
                errors.append(error)
        job.finish("; ".join(errors) if errors else None)

    # -- control --------------------------------------------------------------------------

    def status(self, args: dict | None = None) -> dict:
        """``args``: ``{"edges": True}`` adds each cell's last event, when, and its
        edge counts (``CellLink.edges_status``)."""
        # What status shows is committed: events accepted but still waiting for the group
        # commit are written first (else a caught-up seq could come with the counts of
        # the rows before it). While commits fail, the positions shown are the committed
        # ones (the accepted ones are rewound at every failed try).
        if self.store_failing_since is None and (self.pending or self.dirty):
            self.commit()
        stored = self.writer.load_positions() if self.store_failing_since else None
        edges = bool(args and args.get("edges"))
        return {"cells": [{**link.status(self.writer.counts(link.name),
                                         None if stored is None else stored.get(link.name)),
                           **(link.edges_status() if edges else {})}
                          for link in self.links.values()],
                "dead_letters": self.dead_total, "events_applied": self.events_applied,
                "batches_committed": self.batches_committed, "pid": os.getpid(),
                "wal_bytes": self.wal_pages * self._frame_bytes,
                "wal_backlog_bytes": self.wal_backlog_bytes,
                "store_failing_since": self.store_failing_since,
                "store_error": self.store_error, "disk_full": self.disk_full}

    @property
    def wal_backlog_bytes(self) -> int:
        """Bytes committed to the WAL that no checkpoint has copied back yet."""
        return max(self.wal_pages - self.wal_copied, 0) * self._frame_bytes

    def _handlers(self) -> dict:
        def resync_op(args):
            return {"job": self.start_job("resync", args.get("cell")).id}

        def verify_op(args):
            return {"job": self.start_job("verify", args.get("cell"),
                                          bool(args.get("repair"))).id}

        def job_op(args):
            job = self.jobs.get(args.get("job"))
            if job is None:
                raise RequestError("unknown_job", f"no job {args.get('job')!r}")
            return job.to_dict()

        def dead_letters_op(args):
            limit = args.get("limit", 100)
            return {"dead_letters": self.writer.dead_letters(int(limit) if
                                                             isinstance(limit, int) else 100)}

        return {"status": self.status, "resync": resync_op, "verify": verify_op,
                "job": job_op, "dead_letters": dead_letters_op}

    # -- background ------------------------------------------------------------------------

    def _checkpointer(self) -> None:
        # A second connection in a real thread: the copy back and its fsync then do not
        # hold the hub, and a PASSIVE checkpoint never blocks the writer.
        #
        # But the writer commits during nearly every passive checkpoint, so the WAL is
        # never all copied back when a write begins, and SQLite starts it over only then:
        # under steady churn it grew without end (26 MB/s). So once it holds more than
        # WAL_RESTART_BYTES, commits are held (feeds keep receiving, the hub runs) while
        # a RESTART checkpoint copies the rest, which the passive one just before left
        # small, and waits briefly for readers of old snapshots; the next commit then
        # starts the WAL over (and journal_size_limit cuts the file back).
        pool = gevent.get_hub().threadpool
        conn = pool.apply(apsw.Connection, (self.config.replica_path,))
        conn.set_busy_timeout(CHECKPOINT_BUSY_MS)
        connection.grow_in_chunks(conn)
        try:
            while True:
                self._wal_big.wait(CHECKPOINT_INTERVAL)
                self._wal_big.clear()
                result = pool.apply(_quietly, (connection.checkpoint_passive, conn))
                if isinstance(result, apsw.Error):
                    log.debug("checkpoint: %r", result)
                    continue
                self.wal_copied = min(max(result[1], 0), self.wal_pages)
                left = self.wal_pages - max(result[1], 0)   # written during the copy
                if self.wal_pages * self._frame_bytes <= connection.WAL_RESTART_BYTES:
                    continue
                if left * self._frame_bytes > connection.WAL_RESTART_BYTES:
                    self._wal_big.set()    # too much to copy with writes held: again
                    continue
                flushed = pool.apply(_quietly, (connection.flush_to_disk,
                                                self.config.replica_path))
                if flushed is not None:      # the RESTART that follows reports it too
                    log.debug("flush before the WAL restart: %r", flushed)
                if not self._restart_wal(pool, conn):
                    gevent.sleep(RESTART_RETRY)
                    self._wal_big.set()
        finally:
            self._writes_open.set()
            try:
                conn.close()
            except apsw.ThreadingViolationError:
                pass    # killed during a checkpoint: the thread ends it, then GC closes

    def _restart_wal(self, pool, conn: apsw.Connection) -> bool:
        self._writes_open.clear()
        began = time.monotonic()
        try:
            result = pool.apply(_quietly, (connection.checkpoint_restart, conn))
        finally:
            self._writes_open.set()
        held = time.monotonic() - began
        self.wal_restart_pause_max = max(self.wal_restart_pause_max, held)
        if isinstance(result, apsw.Error):
            log.debug("WAL restart checkpoint (writes held %.3fs): %r", held, result)
            return False
        self.wal_restarts += 1
        self.wal_pages = self.wal_copied = 0
        log.debug("WAL restart checkpoint: %d frames, writes held %.3fs", result[0], held)
        return True

    def _spawn(self, fn, *args) -> gevent.Greenlet:
        g = gevent.spawn(fn, *args)
        self._greenlets.append(g)
        g.link_exception(self._crashed)
        return g

    def _crashed(self, g: gevent.Greenlet) -> None:
        log.error("ingest greenlet %s died: %r", g, g.exception)
        self.stopped.set()

    def run(self, stop=None) -> None:
        self._spawn(serve_control, self.config.control_url, self._handlers(),
                    lambda msg: log.error("%s", msg))
        self._spawn(self._committer)
        self._spawn(self._checkpointer)
        for link in self.links.values():
            self._spawn(self._read_feed, link)
            self._spawn(self._drive, link)
        if stop is not None:
            self._spawn(self._watch_stop, stop)
        try:
            self.stopped.wait()
        finally:
            self.close()

    def _watch_stop(self, stop) -> None:
        while not stop.is_set():
            gevent.sleep(STOP_POLL)
        self.stopped.set()

    def close(self) -> None:
        gevent.killall([g for g in self._greenlets if not g.dead], block=True, timeout=2)
        self._greenlets.clear()
        try:
            self.commit()
        finally:
            for link in self.links.values():
                link.control.close()
            self.conn.close()


def run_ingest(config: IngestConfig, stop=None, renderer=None) -> None:
    """Run ingest until ``stop`` (anything with ``is_set()``) is set, or SIGTERM/SIGINT.
    Call in the process that will own the replica's writer (after any fork)."""
    gevent.reinit()
    try:
        import setproctitle
        setproctitle.setproctitle("appliance: ingest")
    except ImportError:
        pass
    if nanomsg.wrapper.__name__ != "_nanomsg_cpy":
        raise RuntimeError("nanomsg-python is the ctypes build; reinstall it with "
                           "pip install --no-cache-dir --no-binary nanomsg nanomsg")
    ingest = Ingest(config, renderer)
    if stop is None:  # a caller with its own stop event keeps its own signal handlers
        for signum in (signal.SIGTERM, signal.SIGINT):
            gevent.signal_handler(signum, ingest.stopped.set)
    ingest.run(stop)


def _cell_arg(text: str) -> CellFeed:
    name, _, urls = text.partition("=")
    feed_url, _, rest = urls.partition(",")
    control_url, _, key_file = rest.partition(",")
    if not (name and feed_url and control_url):
        raise argparse.ArgumentTypeError("expected NAME=FEED_URL,CONTROL_URL[,KEY_FILE]")
    return CellFeed(name, feed_url, control_url, key_file or None)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m replica.ingest",
                                     description="Run the replica's ingest (single writer).")
    parser.add_argument("--replica", required=True, help="replica database path")
    parser.add_argument("--control", required=True, help="ingest control URL (REP)")
    parser.add_argument("--cell", action="append", type=_cell_arg, default=[],
                        help="NAME=FEED_URL,CONTROL_URL[,KEY_FILE] (repeat per feed)")
    parser.add_argument("--group-commit-ms", type=float, default=IngestConfig.group_commit_ms)
    parser.add_argument("--group-commit-max", type=int,
                        default=IngestConfig.group_commit_max)
    parser.add_argument("--stale-after", type=float, default=IngestConfig.stale_after)
    parser.add_argument("--replay-limit", type=int, default=IngestConfig.replay_limit)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s ingest %(levelname)s %(message)s")
    run_ingest(IngestConfig(args.replica, args.cell, args.control,
                            group_commit_ms=args.group_commit_ms,
                            group_commit_max=args.group_commit_max,
                            stale_after=args.stale_after, replay_limit=args.replay_limit))


if __name__ == "__main__":
    main()
