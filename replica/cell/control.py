"""The cell's control socket (REP): hello, replay, consistent paged snapshots,
digests, buckets and fetch, each answered with ``replica.feed`` encodings.

Runs in its own process (see ``publisher.py``) or thread, with its own source
(``source.py``: opened by the server, never shared), so a long snapshot page never
delays the feed. Every request gets a reply; a bad request gets an error reply
(counted) and the server goes on.

Consistency: every op reads inside one read view, the change log first and then the
entities (the seam's consistency rule), and reports the seq it read (the change log's
head), so the entities it returns are the state at that seq or newer (with a SQLite
outbox: exactly that state). A digest rebuilds every entity's hash from the source's
tables inside its read view: it exists to find changes that never reached the change
log (a disabled trigger, a hand edit, a bug), so it must not trust the change log. The
hashes are kept (``HashCache``) so that the bucket requests that follow a digest only
rebuild what the change log says changed since.

Replies are encoded once: a page or a replay is built and packed with the cyclic
garbage collector paused (they are trees without cycles), a reply over
REPLY_MAX_BYTES is cut short by sizes estimated from compact JSON, and a replay
builds its events in chunks only until the reply is full.

A snapshot holds a read view of its own (``CellSource.open_snapshot``) from
``snapshot_begin`` until ``snapshot_end`` or 60 s of idleness; that never blocks the
cell's writers. After serving a page, the server builds (and encodes)
the next one while the requester applies it (``prefetch``); a replay that did not
reach the head gets its successor prefetched the same way. At most MAX_SNAPSHOTS are open; when
full, one idle for SNAPSHOT_EVICT_IDLE_SECONDS makes room (a requester that died
mid-resync must not block its own retry for a minute).

Authentication (``sealing.py``): with a key ring, a request must open under one of
its keys and the reply is sealed for that request; a request that does not open gets
a refusal that says nothing but "refused" (unsealed), and the server goes on. Without
one, a sealed request is refused with a reply that says this cell has no key.
"""

from __future__ import annotations

import logging
import select
import threading
import time
import uuid as uuidlib
from dataclasses import dataclass, field

import nanomsg

from replica import feed, sealing
from replica.cell import prerender
from replica.cell import source as cell_source
from replica.cell.source import CellSource, EntityReader, HeldView

log = logging.getLogger("replica.cell.control")

REPLY_MAX_BYTES = 3_500_000      # keep every reply under ~4 MiB
REPLAY_MAX_EVENTS = 10_000
PAGE_MAX_ITEMS = 2_000
FETCH_MAX_KEYS = 1_000
SNAPSHOT_IDLE_SECONDS = 60.0
MAX_SNAPSHOTS = 4
REFUSED_LOG_EVERY = 60.0         # at most one log line this often for refused requests
SNAPSHOT_EVICT_IDLE_SECONDS = 5.0   # when full, a snapshot idle this long makes room
POLL_SECONDS = 0.2               # how often the loop looks at stop and idle snapshots
REPLAY_PREFETCH_SECONDS = 5.0    # a prefetched replay reply older than this is rebuilt
REPLAY_CHUNK = 500               # change log rows built at a time until a replay reply is full
CHANGED_KEYS_PAGE = 10_000       # change log rows read at a time for a digest refresh


class RequestError(Exception):
    """A request that cannot be answered; becomes an error reply."""

    def __init__(self, error: str, message: str, **fields):
        super().__init__(f"{error}: {message}")
        self.error = error
        self.fields = fields


@dataclass
class Snapshot:
    id: str
    view: HeldView
    last_used: float = field(default_factory=time.monotonic)
    # the page after the last one served, built while the requester applied that one
    prefetched: tuple | None = None

    @property
    def seq(self) -> int:
        return self.view.seq

    @property
    def total(self) -> int:
        return self.view.total

    def close(self) -> None:
        self.view.close()


@dataclass
class ControlStats:
    requests: int = 0
    errors: int = 0
    refused: int = 0                 # requests that did not authenticate
    snapshots_opened: int = 0
    snapshots_expired: int = 0


def _int_arg(args: dict, name: str, low: int | None = None, high: int | None = None) -> int:
    value = args.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise RequestError("bad_request", f"{name!r} must be an integer")
    if (low is not None and value < low) or (high is not None and value > high):
        raise RequestError("bad_request", f"{name!r}={value} is out of range")
    return value


class HashCache:
    """Entity hashes of the whole cell at one seq. ``refresh(full=True)`` builds every
    entity; otherwise only the keys the change log says changed since are rebuilt (a
    full build when the log was pruned past the cached seq)."""

    def __init__(self):
        self.seq: int | None = None
        self.entries: dict[tuple[str, str], tuple[int, int]] = {}   # -> (hash, bucket)

    def refresh(self, source: CellSource, kinds: list[str], full: bool = False) -> int:
        """Bring the cache to the head of ``source``; call inside its open read view
        (the change log is read first, then the entities)."""
        with feed.gc_paused():
            return self._refresh(source, kinds, full)

    def _refresh(self, source: CellSource, kinds: list[str], full: bool) -> int:
        log_, entities = source.changelog, source.entities
        head = log_.head()
        if not full and self.seq is not None and head == self.seq:
            return head
        if full or self.seq is None or log_.oldest() > self.seq + 1 or head < self.seq:
            entries = {}
            for kind, key, ent in entities.iter_entities(kinds, page=1000):
                entries[(kind, key)] = (feed.entity_hash(ent), feed.bucket_of(key))
            self.entries = entries
        else:
            changed: dict[str, dict[str, None]] = {}
            after = self.seq
            while after < head:
                rows = log_.events_after(after, CHANGED_KEYS_PAGE)
                if not rows:
                    break
                for seq, kind, key in rows:
                    if seq <= head:
                        changed.setdefault(kind, {})[key] = None
                after = rows[-1][0]
            for kind, keys in changed.items():
                if kind not in kinds:
                    continue
                for key, ent in entities.build(kind, list(keys)).items():
                    if ent is None:
                        self.entries.pop((kind, key), None)
                    else:
                        self.entries[(kind, key)] = (feed.entity_hash(ent), feed.bucket_of(key))
        self.seq = head
        return head


class ControlServer:
    """Answers control requests on ``sock`` until ``stop`` is set."""

    def __init__(self, opener: cell_source.SourceOpener | str, cell: str, epoch: str,
                 kinds: list[str], sock: nanomsg.Socket, stop: threading.Event,
                 sealer: sealing.Sealer | None = None):
        self.opener = cell_source.opener_of(opener)
        self.sealer = sealer
        self._refused_logged_at = 0.0
        self.cell = cell
        self.epoch = epoch
        self.kinds = kinds
        self.sock = sock
        self.stop = stop
        self.stats = ControlStats()
        self.snapshots: dict[str, Snapshot] = {}
        self.source: CellSource | None = None
        self.errors: tuple[type[BaseException], ...] = ()
        self.hashes = HashCache()
        self.pending_prefetch: tuple | None = None
        self.prefetched_replay: tuple | None = None    # (from, limit, built at, reply, next)
        self.handlers = {
            "hello": self.hello, "replay": self.replay,
            "snapshot_begin": self.snapshot_begin, "snapshot_page": self.snapshot_page,
            "snapshot_end": self.snapshot_end, "digest": self.digest,
            "bucket": self.bucket, "fetch": self.fetch,
        }

    # -- loop --------------------------------------------------------------

    def open(self) -> None:
        """Open the source (``run`` does; a caller of ``handle`` alone does it first)."""
        self.source = self.opener()
        self.errors = self.source.errors

    def close(self) -> None:
        for snap in list(self.snapshots.values()):
            snap.close()
        self.snapshots.clear()
        if self.source is not None:
            self.source.close()

    def run(self) -> None:
        self.open()
        fd = self.sock.recv_fd
        try:
            while not self.stop.is_set():
                try:
                    self.serve_one(fd)
                except Exception:      # keep answering: a dead control thread is a dead cell
                    log.exception("control loop error")
                    self.stop.wait(0.1)
        finally:
            self.close()

    def serve_one(self, fd: int) -> None:
        self.expire_idle()
        ready, _, _ = select.select([fd], [], [], POLL_SECONDS)
        if not ready:
            return
        try:
            data = self.sock.recv(flags=nanomsg.DONTWAIT)
        except nanomsg.NanoMsgAPIError as exc:
            if exc.errno == nanomsg.EAGAIN:
                return
            raise
        reply = self.answer(data)
        try:
            self.sock.send(reply)
        except nanomsg.NanoMsgAPIError as exc:   # the requester went away
            log.warning("control reply not sent: %s", exc)
        self.prefetch()

    def prefetch(self) -> None:
        """Build the next page of the snapshot just served, or the next replay reply
        for a requester catching up, so that building it overlaps with the requester
        applying the reply it has. A prefetched replay is used within
        REPLAY_PREFETCH_SECONDS: it is the state at the seq it reports, as any reply is,
        only read a little earlier."""
        pending, self.pending_prefetch = self.pending_prefetch, None
        if pending is None:
            return
        if pending[0] == "replay":
            _op, start, limit = pending
            built_at = time.monotonic()
            try:
                self.prefetched_replay = (start, limit, built_at) + self._replay_reply(start,
                                                                                      limit)
            except (RequestError, *self.errors) as exc:
                log.warning("replay prefetch from %d failed: %s", start, exc)
            return
        snap, after, limit = pending
        if snap.id in self.snapshots:
            try:
                snap.prefetched = (after, limit) + self._page_reply(snap, after, limit)
            except self.errors as exc:
                log.warning("snapshot %s: prefetch failed: %s", snap.id, exc)

    def answer(self, frame: bytes) -> bytes:
        """One request as received in, its reply as sent out (sealed with a key ring);
        never raises."""
        if self.sealer is None:
            if sealing.is_sealed(frame):
                return self._refuse("a sealed request, and this cell has no key file",
                                    "this cell has no key file; give it the appliance's "
                                    "(appliance cell --key-file)")
            return self.handle(frame)
        try:
            data, nonce = self.sealer.open_request(frame)
        except sealing.AuthError as exc:
            return self._refuse(str(exc), "request not authenticated")
        return self.sealer.seal_reply(self.handle(data), nonce)

    def _refuse(self, why: str, told: str) -> bytes:
        self.stats.refused += 1
        now = time.monotonic()
        if now - self._refused_logged_at >= REFUSED_LOG_EVERY:
            self._refused_logged_at = now
            log.warning("control request refused (%d so far): %s", self.stats.refused, why)
        return feed.encode_error("refused", told)

    def handle(self, data: bytes) -> bytes:
        """One request in, one reply out (both plain); never raises."""
        self.stats.requests += 1
        op = "?"
        try:
            op, args = feed.decode_request(bytes(data))
            return self.handlers[op](args)
        except feed.FeedError as exc:
            self.stats.errors += 1
            return feed.encode_error(exc.reason, str(exc))
        except RequestError as exc:
            self.stats.errors += 1
            return feed.encode_error(exc.error, f"{op}: {exc}", **exc.fields)
        except Exception as exc:  # a bug or a database error must not kill the server
            self.stats.errors += 1
            log.exception("control %s failed", op)
            return feed.encode_error("internal", f"{op}: {type(exc).__name__}: {exc}")

    # -- helpers -----------------------------------------------------------

    def _read(self):
        """A read view of the source: read the change log first, then entities."""
        return self.source.entities.read_view()

    def expire_idle(self) -> None:
        now = time.monotonic()
        for snap in list(self.snapshots.values()):
            if now - snap.last_used > SNAPSHOT_IDLE_SECONDS:
                log.info("snapshot %s expired after %.0fs idle", snap.id, now - snap.last_used)
                self.snapshots.pop(snap.id).close()
                self.stats.snapshots_expired += 1

    # -- ops ---------------------------------------------------------------

    def hello(self, args: dict) -> bytes:
        with self._read():
            head, oldest = self.source.changelog.head(), self.source.changelog.oldest()
        return feed.encode_reply(cell=self.cell, epoch=self.epoch, head=head, oldest=oldest,
                                 versions=list(feed.FEED_VERSIONS), kinds=self.kinds)

    def replay(self, args: dict) -> bytes:
        epoch = args.get("epoch")
        if epoch != self.epoch:
            raise RequestError("epoch", f"epoch {epoch!r} is not the current epoch",
                               epoch=self.epoch)
        start = max(_int_arg(args, "from"), 1)
        limit = min(_int_arg(args, "limit", low=1), REPLAY_MAX_EVENTS)
        ready, self.prefetched_replay = self.prefetched_replay, None
        if (ready is not None and ready[:2] == (start, limit)
                and time.monotonic() - ready[2] < REPLAY_PREFETCH_SECONDS):
            reply, following = ready[3:]
        else:
            reply, following = self._replay_reply(start, limit)
        if following is not None:
            self.pending_prefetch = ("replay", following, limit)
        return reply

    def _replay_reply(self, start: int, limit: int) -> tuple[bytes, int | None]:
        """The encoded reply for a replay from ``start``, and the seq a requester
        catching up asks for next (None when this reply reaches the head)."""
        changelog = self.source.changelog
        with self._read():
            head = changelog.head()
            oldest = changelog.oldest()
            if start < oldest and start <= head:
                raise RequestError("retention", f"seq {start} is older than the oldest "
                                   f"retained seq {oldest}", oldest=oldest, head=head)
            rows = changelog.events_after(start - 1, limit)
            with feed.gc_paused():
                events = self._replay_events(rows)
                last = events[-1]["s"] if events else None
                reply = feed.encode_reply(epoch=self.epoch, head=head, events=events,
                                          rv=prerender.RENDER_VERSION)
                del events, rows
        return reply, (last + 1 if last is not None and last < head else None)

    def _replay_events(self, rows: list[tuple]) -> list[dict]:
        """The wire events of ``rows``, built REPLAY_CHUNK at a time until the reply
        is full: the rest is not built at all (the requester asks again from there)."""
        wire, size = [], 0
        for start in range(0, len(rows), REPLAY_CHUNK):
            events = prerender.with_rows(
                self.cell, built_events(self.source.entities, rows[start:start + REPLAY_CHUNK]))
            for event in events:
                size += (len(event.entity or b"") + prerender.row_bytes(event.row)
                         + len(event.key) + 32)
                if wire and size > REPLY_MAX_BYTES:
                    return wire
                wire.append(feed.encode_event(event))
        return wire

    def snapshot_begin(self, args: dict) -> bytes:
        if len(self.snapshots) >= MAX_SNAPSHOTS:
            # A requester that died mid-resync leaves its snapshot open; its retry must
            # not wait for the idle expiry. Evict the idlest, unless all are in use.
            idlest = min(self.snapshots.values(), key=lambda snap: snap.last_used)
            if time.monotonic() - idlest.last_used < SNAPSHOT_EVICT_IDLE_SECONDS:
                raise RequestError("busy", f"{MAX_SNAPSHOTS} snapshots are in use")
            self.snapshots.pop(idlest.id).close()
            self.stats.snapshots_expired += 1
        view = self.source.open_snapshot()
        if view.epoch != self.epoch:
            # The database was replaced and the publisher has not opened it again yet:
            # its rows must not go out under this epoch. The requester asks again.
            view.close()
            raise RequestError("epoch", "the database has another epoch now; the "
                               "publisher is opening it again", epoch=self.epoch)
        snap = Snapshot(uuidlib.uuid4().hex, view)
        self.snapshots[snap.id] = snap
        self.stats.snapshots_opened += 1
        return feed.encode_reply(snapshot=snap.id, epoch=self.epoch, seq=view.seq,
                                 total=view.total)

    def _snapshot(self, args: dict) -> Snapshot:
        snap = self.snapshots.get(args.get("snapshot"))
        if snap is None:
            raise RequestError("snapshot", f"no open snapshot {args.get('snapshot')!r} "
                               "(unknown, ended or expired)")
        snap.last_used = time.monotonic()
        return snap

    def snapshot_page(self, args: dict) -> bytes:
        snap = self._snapshot(args)
        after = args.get("after")
        if after is not None:
            if (not isinstance(after, (list, tuple)) or len(after) != 2
                    or not all(isinstance(part, str) for part in after)):
                raise RequestError("bad_request", "'after' must be null or [kind, key]")
            after = (after[0], after[1])
        limit = min(_int_arg(args, "limit", low=1), PAGE_MAX_ITEMS)
        ready, snap.prefetched = snap.prefetched, None
        if ready is not None and ready[:2] == (after, limit):
            reply, cursor = ready[2:]
        else:
            reply, cursor = self._page_reply(snap, after, limit)
        snap.last_used = time.monotonic()
        if cursor is not None:
            self.pending_prefetch = (snap, cursor, limit)
        return reply

    def _page_reply(self, snap: Snapshot, after, limit: int) -> tuple[bytes, tuple | None]:
        """The encoded reply for one page and the cursor after it (None: the last)."""
        with feed.gc_paused():
            items, cursor = snap.view.entities.page_entities(self.kinds, after, limit)
            wire = [[kind, key, feed.wire_entity(ent)] for kind, key, ent in items]
            size = 0
            for i, (kind, key, raw) in enumerate(wire):
                size += len(raw) + len(key) + 16
                if i and size > REPLY_MAX_BYTES:                # too big: cut it short
                    wire = wire[:i]
                    cursor = (wire[-1][0], wire[-1][1])          # truncated: not done
                    break
            reply = feed.encode_reply(items=wire, done=cursor is None)
            del items, wire      # freed before the collector is back
        return reply, cursor

    def snapshot_end(self, args: dict) -> bytes:
        snap = self.snapshots.pop(args.get("snapshot"), None)
        if snap is not None:
            snap.close()
        return feed.encode_reply()

    def digest(self, args: dict) -> bytes:
        buckets = [[0, 0] for _ in range(feed.DIGEST_BUCKETS)]
        with self._read():
            seq = self.hashes.refresh(self.source, self.kinds, full=True)
            for entity_hash, bucket in self.hashes.entries.values():
                buckets[bucket][0] += 1
                buckets[bucket][1] += entity_hash
        return feed.encode_reply(epoch=self.epoch, seq=seq, buckets=buckets)

    def bucket(self, args: dict) -> bytes:
        wanted = _int_arg(args, "bucket", low=0, high=feed.DIGEST_BUCKETS - 1)
        entities: dict[str, list[int]] = {}
        with self._read():
            seq = self.hashes.refresh(self.source, self.kinds)
            members: dict[str, list[str]] = {}
            for (kind, key), (entity_hash, bucket) in self.hashes.entries.items():
                if bucket == wanted:
                    members.setdefault(kind, []).append(key)
                    entities[key] = [entity_hash, 0]
            for kind, keys in members.items():
                for key, changed in self.source.changelog.last_changed(kind, keys).items():
                    entities[key][1] = changed
        return feed.encode_reply(epoch=self.epoch, seq=seq, entities=entities)

    def fetch(self, args: dict) -> bytes:
        kind = args.get("kind")
        if kind not in self.kinds:
            raise RequestError("bad_request", f"kind {kind!r} is not published here "
                               f"(kinds: {self.kinds})")
        keys = args.get("keys")
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise RequestError("bad_request", "'keys' must be a list of strings")
        if len(keys) > FETCH_MAX_KEYS:
            raise RequestError("bad_request", f"at most {FETCH_MAX_KEYS} keys per fetch")
        with self._read():
            seq = self.source.changelog.head()
            entities = self.source.entities.build(kind, keys)
        return feed.encode_reply(epoch=self.epoch, seq=seq, entities={
            key: None if ent is None else feed.wire_entity(ent) for key, ent in entities.items()})


def built_events(entities: EntityReader, rows: list[tuple]) -> list[feed.Event]:
    """The feed events of change log ``rows`` (seq, kind, key): each key's entity built
    once and encoded once (events of one key carry the same bytes), a tombstone for a
    key whose entity is gone. Call inside one read view, after reading ``rows``."""
    by_kind: dict[str, list[str]] = {}
    for _seq, kind, key in rows:
        by_kind.setdefault(kind, []).append(key)
    wire = {kind: {key: None if ent is None else feed.wire_entity(ent)
                   for key, ent in entities.build(kind, keys).items()}
            for kind, keys in by_kind.items()}
    return [make_event(seq, kind, key, wire[kind].get(key)) for seq, kind, key in rows]


def make_event(seq: int, kind: str, key: str, ent: bytes | None) -> feed.Event:
    if ent is None:
        return feed.Event(seq, kind, feed.OP_DELETE, key, None)
    return feed.Event(seq, kind, feed.OP_UPSERT, key, ent)
