"""The cell's control socket (REP): hello, replay, consistent paged snapshots,
digests, buckets and fetch, each answered with ``replica.feed`` encodings.

Runs in its own thread with its own SQLite connections, so a long snapshot page or
digest never delays the feed. Every request gets a reply; a bad request gets an
error reply (counted) and the server goes on.

Consistency: every op reads inside one read transaction and reports the seq (the
outbox head) of that transaction, so the entities it returns are exactly the state
at that seq. Digests and buckets keep a cache of entity hashes brought forward by
the outbox (``HashCache``), so only the first one builds every entity.

A snapshot holds its own connection with a read transaction open from
``snapshot_begin`` until ``snapshot_end`` or 60 s of idleness; in WAL mode that never
blocks the cell's writers. After serving a page, the server builds the next one
while the requester applies it (``prefetch``). At most MAX_SNAPSHOTS are open; when
full, one idle for SNAPSHOT_EVICT_IDLE_SECONDS makes room (a requester that died
mid-resync must not block its own retry for a minute).
"""

from __future__ import annotations

import logging
import select
import threading
import time
import uuid as uuidlib
from dataclasses import dataclass, field

import apsw
import msgpack
import nanomsg

from replica import feed
from replica.cell import connection, entity, outbox

log = logging.getLogger("replica.cell.control")

REPLY_MAX_BYTES = 3_500_000      # keep every reply under ~4 MiB
REPLAY_MAX_EVENTS = 10_000
PAGE_MAX_ITEMS = 2_000
FETCH_MAX_KEYS = 1_000
SNAPSHOT_IDLE_SECONDS = 60.0
MAX_SNAPSHOTS = 4
SNAPSHOT_EVICT_IDLE_SECONDS = 5.0   # when full, a snapshot idle this long makes room
POLL_SECONDS = 0.2               # how often the loop looks at stop and idle snapshots


class RequestError(Exception):
    """A request that cannot be answered; becomes an error reply."""

    def __init__(self, error: str, message: str, **fields):
        super().__init__(f"{error}: {message}")
        self.error = error
        self.fields = fields


@dataclass
class Snapshot:
    id: str
    conn: apsw.Connection
    seq: int
    total: int
    last_used: float = field(default_factory=time.monotonic)
    # the page after the last one served, built while the requester applied that one
    prefetched: tuple | None = None

    def close(self) -> None:
        try:
            self.conn.execute("ROLLBACK")
        except apsw.Error:
            pass
        self.conn.close()


@dataclass
class ControlStats:
    requests: int = 0
    errors: int = 0
    snapshots_opened: int = 0
    snapshots_expired: int = 0


def _int_arg(args: dict, name: str, low: int | None = None, high: int | None = None) -> int:
    value = args.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise RequestError("bad_request", f"{name!r} must be an integer")
    if (low is not None and value < low) or (high is not None and value > high):
        raise RequestError("bad_request", f"{name!r}={value} is out of range")
    return value


def _packed_size(obj) -> int:
    return len(msgpack.packb(obj, use_bin_type=True))


class HashCache:
    """Entity hashes of the whole cell at one seq, brought forward by rebuilding
    only the keys the outbox says changed since. A digest is then as cheap as the
    changes since the previous one; the first one (or one after the outbox was
    pruned past the cached seq) builds every entity."""

    def __init__(self):
        self.seq: int | None = None
        self.entries: dict[tuple[str, str], tuple[int, int]] = {}   # -> (hash, bucket)

    def refresh(self, conn: apsw.Connection, kinds: list[str]) -> int:
        """Bring the cache to the head of ``conn``'s open read transaction."""
        head = outbox.outbox_head(conn)
        if self.seq is not None and head == self.seq:
            return head
        if self.seq is None or outbox.outbox_oldest(conn) > self.seq + 1 or head < self.seq:
            self.entries = {(kind, key): (feed.entity_hash(ent), feed.bucket_of(key))
                            for kind, key, ent in entity.iter_entities(conn, kinds)}
        else:
            changed: dict[str, list[str]] = {}
            for kind, key in conn.execute(f"SELECT DISTINCT kind, key FROM {outbox.OUTBOX} "
                                          "WHERE seq > ?", (self.seq,)):
                changed.setdefault(kind, []).append(key)
            for kind, keys in changed.items():
                if kind not in kinds:
                    continue
                for key, ent in entity.build(conn, kind, keys).items():
                    if ent is None:
                        self.entries.pop((kind, key), None)
                    else:
                        self.entries[(kind, key)] = (feed.entity_hash(ent), feed.bucket_of(key))
        self.seq = head
        return head


class ControlServer:
    """Answers control requests on ``sock`` until ``stop`` is set."""

    def __init__(self, db: str, cell: str, epoch: str, kinds: list[str], sock: nanomsg.Socket,
                 stop: threading.Event):
        self.db = db
        self.cell = cell
        self.epoch = epoch
        self.kinds = kinds
        self.sock = sock
        self.stop = stop
        self.stats = ControlStats()
        self.snapshots: dict[str, Snapshot] = {}
        self.conn: apsw.Connection | None = None
        self.hashes = HashCache()
        self.pending_prefetch: tuple | None = None
        self.handlers = {
            "hello": self.hello, "replay": self.replay,
            "snapshot_begin": self.snapshot_begin, "snapshot_page": self.snapshot_page,
            "snapshot_end": self.snapshot_end, "digest": self.digest,
            "bucket": self.bucket, "fetch": self.fetch,
        }

    # -- loop --------------------------------------------------------------

    def run(self) -> None:
        self.conn = connection.open_cell_reader(self.db)
        fd = self.sock.recv_fd
        try:
            while not self.stop.is_set():
                try:
                    self.serve_one(fd)
                except Exception:      # keep answering: a dead control thread is a dead cell
                    log.exception("control loop error")
                    self.stop.wait(0.1)
        finally:
            for snap in list(self.snapshots.values()):
                snap.close()
            self.snapshots.clear()
            self.conn.close()

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
        reply = self.handle(data)
        try:
            self.sock.send(reply)
        except nanomsg.NanoMsgAPIError as exc:   # the requester went away
            log.warning("control reply not sent: %s", exc)
        self.prefetch()

    def prefetch(self) -> None:
        """Build the next page of the snapshot just served, so that building it
        overlaps with the requester applying the page it has."""
        pending, self.pending_prefetch = self.pending_prefetch, None
        if pending is None:
            return
        snap, after, limit = pending
        if snap.id in self.snapshots:
            try:
                snap.prefetched = (after, limit, entity.page_entities(snap.conn, self.kinds,
                                                                      after, limit))
            except apsw.Error as exc:
                log.warning("snapshot %s: prefetch failed: %s", snap.id, exc)

    def handle(self, data: bytes) -> bytes:
        """One request in, one reply out; never raises."""
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

    def _read(self, conn: apsw.Connection):
        """A read transaction: BEGIN, and the first read fixes the snapshot."""
        return _ReadTransaction(conn)

    def expire_idle(self) -> None:
        now = time.monotonic()
        for snap in list(self.snapshots.values()):
            if now - snap.last_used > SNAPSHOT_IDLE_SECONDS:
                log.info("snapshot %s expired after %.0fs idle", snap.id, now - snap.last_used)
                self.snapshots.pop(snap.id).close()
                self.stats.snapshots_expired += 1

    def _built_events(self, conn: apsw.Connection, rows: list[tuple]) -> list[feed.Event]:
        by_kind: dict[str, list[str]] = {}
        for _seq, kind, key in rows:
            by_kind.setdefault(kind, []).append(key)
        built = {kind: entity.build(conn, kind, keys) for kind, keys in by_kind.items()}
        return [make_event(seq, kind, key, built[kind].get(key)) for seq, kind, key in rows]

    # -- ops ---------------------------------------------------------------

    def hello(self, args: dict) -> bytes:
        with self._read(self.conn):
            head, oldest = outbox.outbox_head(self.conn), outbox.outbox_oldest(self.conn)
        return feed.encode_reply(cell=self.cell, epoch=self.epoch, head=head, oldest=oldest,
                                 versions=list(feed.FEED_VERSIONS), kinds=self.kinds)

    def replay(self, args: dict) -> bytes:
        epoch = args.get("epoch")
        if epoch != self.epoch:
            raise RequestError("epoch", f"epoch {epoch!r} is not the current epoch",
                               epoch=self.epoch)
        start = _int_arg(args, "from")
        limit = min(_int_arg(args, "limit", low=1), REPLAY_MAX_EVENTS)
        with self._read(self.conn):
            head = outbox.outbox_head(self.conn)
            oldest = outbox.outbox_oldest(self.conn)
            start = max(start, 1)
            if start < oldest and start <= head:
                raise RequestError("retention", f"seq {start} is older than the oldest "
                                   f"retained seq {oldest}", oldest=oldest, head=head)
            rows = outbox.read_events(self.conn, start - 1, limit)
            events = self._built_events(self.conn, rows)
        wire, size = [], 0
        for item in feed.encode_events(events):
            size += _packed_size(item)
            if wire and size > REPLY_MAX_BYTES:
                break
            wire.append(item)
        return feed.encode_reply(epoch=self.epoch, head=head, events=wire)

    def snapshot_begin(self, args: dict) -> bytes:
        if len(self.snapshots) >= MAX_SNAPSHOTS:
            # A requester that died mid-resync leaves its snapshot open; its retry must
            # not wait for the idle expiry. Evict the idlest, unless all are in use.
            idlest = min(self.snapshots.values(), key=lambda snap: snap.last_used)
            if time.monotonic() - idlest.last_used < SNAPSHOT_EVICT_IDLE_SECONDS:
                raise RequestError("busy", f"{MAX_SNAPSHOTS} snapshots are in use")
            self.snapshots.pop(idlest.id).close()
            self.stats.snapshots_expired += 1
        conn = connection.open_cell_reader(self.db)
        try:
            conn.execute("BEGIN")
            seq = outbox.outbox_head(conn)          # this read fixes the snapshot
            total = entity.count_entities(conn, self.kinds)
        except BaseException:
            conn.close()
            raise
        snap = Snapshot(uuidlib.uuid4().hex, conn, seq, total)
        self.snapshots[snap.id] = snap
        self.stats.snapshots_opened += 1
        return feed.encode_reply(snapshot=snap.id, epoch=self.epoch, seq=seq, total=total)

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
            items, cursor = ready[2]
        else:
            items, cursor = entity.page_entities(snap.conn, self.kinds, after, limit)
        wire, size = [], 0
        for kind, key, ent in items:
            size += _packed_size(ent) + len(key) + 16
            if wire and size > REPLY_MAX_BYTES:
                cursor = (wire[-1][0], wire[-1][1])      # truncated: not done
                break
            wire.append([kind, key, ent])
        snap.last_used = time.monotonic()
        if cursor is not None:
            self.pending_prefetch = (snap, cursor, limit)
        return feed.encode_reply(items=wire, done=cursor is None)

    def snapshot_end(self, args: dict) -> bytes:
        snap = self.snapshots.pop(args.get("snapshot"), None)
        if snap is not None:
            snap.close()
        return feed.encode_reply()

    def digest(self, args: dict) -> bytes:
        buckets = [[0, 0] for _ in range(feed.DIGEST_BUCKETS)]
        with self._read(self.conn):
            seq = self.hashes.refresh(self.conn, self.kinds)
        for entity_hash, bucket in self.hashes.entries.values():
            buckets[bucket][0] += 1
            buckets[bucket][1] += entity_hash
        return feed.encode_reply(epoch=self.epoch, seq=seq, buckets=buckets)

    def bucket(self, args: dict) -> bytes:
        wanted = _int_arg(args, "bucket", low=0, high=feed.DIGEST_BUCKETS - 1)
        entities: dict[str, list[int]] = {}
        with self._read(self.conn):
            seq = self.hashes.refresh(self.conn, self.kinds)
            members: dict[str, list[str]] = {}
            for (kind, key), (entity_hash, bucket) in self.hashes.entries.items():
                if bucket == wanted:
                    members.setdefault(kind, []).append(key)
                    entities[key] = [entity_hash, 0]
            for kind, keys in members.items():
                for key, changed in outbox.last_changed(self.conn, kind, keys).items():
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
        with self._read(self.conn):
            seq = outbox.outbox_head(self.conn)
            entities = entity.build(self.conn, kind, keys)
        return feed.encode_reply(epoch=self.epoch, seq=seq, entities=entities)


class _ReadTransaction:
    def __init__(self, conn: apsw.Connection):
        self.conn = conn

    def __enter__(self):
        if self.conn.in_transaction:     # left open by a failure: start clean
            self.conn.execute("ROLLBACK")
        self.conn.execute("BEGIN")
        return self.conn

    def __exit__(self, *exc):
        self.conn.execute("ROLLBACK")   # nothing was written; ends the read snapshot
        return False


def make_event(seq: int, kind: str, key: str, ent: dict | None) -> feed.Event:
    if ent is None:
        return feed.Event(seq, kind, feed.OP_DELETE, key, None)
    return feed.Event(seq, kind, feed.OP_UPSERT, key, ent)
