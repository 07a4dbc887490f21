"""Resync: load a cell's consistent snapshot at seq S and swap it in atomically.

The snapshot is paged from the cell (snapshot_begin / snapshot_page / snapshot_end)
into the writer's staging tables, out of the readers' sight; one short transaction
then replaces the cell's rows and sets its position to (epoch, S). The next page is
asked for before the current one is staged, so the cell builds it meanwhile, and an
entity whose hash equals the row the replica holds is neither rendered nor staged.
Live events with seq > S that arrive meanwhile are buffered by ingest and applied
after the swap; anything the buffer misses, replay brings.

The ``ingest`` argument is the running ``replica.ingest.Ingest`` and ``link`` its
``CellLink`` (duck-typed here to keep the import graph one-way).
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import gevent

from replica import feed
from replica.link_errors import Resync
from replica.position import Position

log = logging.getLogger("replica.resync")

YIELD_SECONDS = 0.001
PAGE_ITEMS = 1000       # fewer round trips; the cell caps a reply by bytes anyway
SLICE_ITEMS = 100       # a page is rendered and staged in slices of this many items...
BUSY_SLICE = 0.02       # ... and the hub is let go once this long has passed


# Only a snapshot can bring this feed back: new epoch, or beyond the retention.
NeedResync = Resync


def _stage_page(ingest, link, items: list, seq: int) -> int:
    """Validate one slice of a page and stage it: an entity the replica holds already
    (same key and hash) is only kept, not rendered; the others are rendered into
    staging; bad items are dead-lettered and skipped (the swap then lacks them, a
    verify reports them). Returns the items accepted."""
    writer = ingest.writer
    rows: dict[str, list[tuple]] = {}
    kept: dict[str, list[str]] = {}
    accepted = 0
    for item in items:
        try:
            if not isinstance(item, (list, tuple)) or len(item) != 3:
                raise feed.FeedError("malformed", f"snapshot item is not [kind, key, entity]")
            kind, key, raw = item
            if kind not in feed.KINDS or not isinstance(key, str):
                raise feed.FeedError("bad_event", f"snapshot item {kind!r} {key!r}")
            # An entity the replica holds already is recognised by the hash of its
            # bytes alone: neither decoded nor rendered (it was validated when applied).
            entity_hash = feed.hash_bytes(raw) if type(raw) is bytes else None
            if entity_hash is not None and writer.held_hash(kind, key) == entity_hash:
                kept.setdefault(kind, []).append(key)
                accepted += 1
                continue
            entity = feed.open_entity(kind, key, raw, f"snapshot {kind} {key}")
            change = ingest.change_of(link.name, seq, kind, key, entity, entity_hash)
        except Exception as exc:
            reason = exc.reason if isinstance(exc, feed.FeedError) else "bad_entity"
            ingest.dead_letter(link, link.name, reason,
                               f"resync {link.name} at {seq}: {exc}", repr(item)[:512].encode())
            continue
        rows.setdefault(kind, []).append(change.row)
        accepted += 1
    for kind, keys in kept.items():
        writer.keep(kind, keys)
    for kind, kind_rows in rows.items():
        writer.stage(kind, kind_rows)
    return accepted


def resync_cell(ingest, link, progress: Callable[[int, int], None] | None = None) -> Position:
    """Snapshot the cell and swap it in; live events of the new epoch are buffered on
    ``link`` meanwhile (apply them with ``apply_buffered``). Returns the new position."""
    ingest.commit()  # what was accepted before the snapshot is written first
    link.buffer, link.buffered_events = [], 0   # live batches are kept from now on
    writer = ingest.writer
    try:
        begin = ingest.request(link, "snapshot_begin")
        snapshot, epoch, seq, total = (begin["snapshot"], begin["epoch"], int(begin["seq"]),
                                       int(begin.get("total") or 0))
        log.info("cell %s: snapshot %s at %s:%d, %d entities", link.name, snapshot[:8],
                 epoch[:8], seq, total)
        link.head = max(seq, link.head if link.position and link.position.epoch == epoch else 0)
        writer.stage_begin(link.name)
        try:
            done = 0
            if progress:
                progress(0, total)
            # The next page is asked for before this one is rendered, so the cell
            # builds it meanwhile.
            pending = link.control.begin("snapshot_page", snapshot=snapshot, after=None,
                                         limit=PAGE_ITEMS)
            last_yield = time.monotonic()
            try:
                while pending is not None:
                    page = pending.result()
                    link.heard()
                    pending = None
                    items = page.get("items") or []
                    if items and not page.get("done"):
                        pending = link.control.begin("snapshot_page", snapshot=snapshot,
                                                     after=[items[-1][0], items[-1][1]],
                                                     limit=PAGE_ITEMS)
                    for i in range(0, len(items), SLICE_ITEMS):
                        _stage_page(ingest, link, items[i:i + SLICE_ITEMS], seq)
                        done += len(items[i:i + SLICE_ITEMS])
                        if time.monotonic() - last_yield > BUSY_SLICE:
                            if progress:
                                progress(done, max(total, done))
                            # Let status and the other feeds through. A real timer, not
                            # sleep(0): sleep(0) only runs callbacks and leaves timers
                            # and I/O waiting.
                            gevent.sleep(YIELD_SECONDS)
                            last_yield = time.monotonic()
                    if progress:
                        progress(done, max(total, done))
            finally:
                if pending is not None:
                    pending.cancel()
            try:
                ingest.request(link, "snapshot_end", snapshot=snapshot)
            except Exception as exc:  # the snapshot expires on its own
                log.info("cell %s: snapshot_end: %r", link.name, exc)
            position = Position(link.name, epoch, seq)
            ingest.commit()
            ingest.dirty.pop(link.name, None)
            started = time.monotonic()
            counts = writer.swap(position)
            swap_seconds = time.monotonic() - started
        except BaseException:
            writer.stage_discard()
            raise
        link.position = position
        link.head = max(link.head, seq)
        link.note_lag()
        link.heard()  # the swap held the hub: that silence was ours, not the cell's
        log.info("cell %s: swapped in at %d in %.2fs: %s", link.name, seq, swap_seconds, counts)
        return position
    except BaseException:
        link.buffer, link.buffered_events = None, 0
        raise


def apply_buffered(ingest, link) -> None:
    """After the swap: apply the live events that arrived during the snapshot, in order.
    Those at or below S are duplicates; after a hole the rest wait for replay."""
    buffered, link.buffer, link.buffered_events = link.buffer or [], None, 0
    for batch in buffered:
        if batch.epoch != link.position.epoch:
            continue
        if ingest.accept(link, batch.events, rendered=ingest.rows_usable(batch)) == "gap":
            break
