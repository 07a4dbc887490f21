"""Drift check: compare the replica with the cell at one consistent point, and repair.

1. Pause applying the cell's live events; ask the cell's digest: per bucket
   [count, sum of entity hashes] at its seq S.
2. Bring the replica to exactly S by replay, commit.
3. Buckets whose digests differ are compared key by key (the cell's ``bucket`` op
   gives each key's hash and last changed seq; keys changed after S are skipped).
4. With repair, the differing keys are fetched and applied (upsert, or delete when
   the cell no longer has them). The feed's position is not moved: events after the
   fetch overwrite those entities again in order.
5. Resume; the events that arrived meanwhile come back by replay.

Replayed events carry the entity as it is when replayed, so after step 2 a key may
already show a change made after S: its last changed seq is then > S and it is
skipped, as it would be by the cell's own bucket listing.

The ``ingest``/``link`` arguments are ``replica.ingest.Ingest`` / ``CellLink``.
"""

from __future__ import annotations

import logging

from replica import feed
from replica.resync import NeedResync

log = logging.getLogger("replica.drift")

DIGEST_ATTEMPTS = 3
FETCH_KEYS = 500


class DriftError(Exception):
    """The check could not reach a consistent point."""


def differing_buckets(cell_buckets, replica_buckets) -> list[int]:
    """Bucket numbers whose [count, sum] differ. The cell's digest is a list of
    [count, sum] pairs (or a {bucket: pair} map)."""
    if isinstance(cell_buckets, dict):
        pairs = [[0, 0] for _ in range(feed.DIGEST_BUCKETS)]
        for bucket, pair in cell_buckets.items():
            pairs[int(bucket)] = list(pair)
        cell_buckets = pairs
    return [b for b in range(feed.DIGEST_BUCKETS)
            if list(cell_buckets[b]) != list(replica_buckets[b])]


def differing_keys(cell_entities: dict, replica_entities: dict, seq: int
                   ) -> tuple[list[str], list[str]]:
    """Keys of one bucket whose state differs at seq ``seq``: (differing, replica_only).

    ``cell_entities``: {key: [entity_hash, last_changed_seq]} (live entities only);
    ``replica_entities``: {key: (kind, entity_hash, row_seq)}. ``replica_only`` are keys
    the cell did not list: drift, unless the cell removed them after ``seq``."""
    differing = []
    for key, (ehash, changed) in cell_entities.items():
        if changed > seq:
            continue
        ours = replica_entities.get(key)
        if ours is None or ours[1] != ehash:
            differing.append(key)
    replica_only = [key for key in replica_entities if key not in cell_entities]
    return sorted(differing), sorted(replica_only)


def _reach(ingest, link, seq: int) -> None:
    """Replay until the replica's position is exactly ``seq``, then commit."""
    while link.position.seq < seq:
        before = link.position.seq
        ingest.replay_page(link, upto=seq)
        if link.position.seq == before:
            raise DriftError(f"replay made no progress at {before} (target {seq})")
    ingest.commit()


def _consistent_digest(ingest, link) -> dict:
    for _ in range(DIGEST_ATTEMPTS):
        digest = ingest.request(link, "digest")
        if digest["epoch"] != link.position.epoch:
            raise NeedResync(f"digest epoch {digest['epoch'][:8]} is not "
                             f"{link.position.epoch[:8]}")
        if link.position.seq <= int(digest["seq"]):
            _reach(ingest, link, int(digest["seq"]))
            return digest
    raise DriftError(f"replica at {link.position.seq} stayed ahead of the cell's digest")


def _repair(ingest, link, keys: list[str], known: dict[str, str]) -> int:
    """Fetch the differing entities and apply them; returns the changes written."""
    from replica.store.writer import Change  # the writer's value type

    found: dict[str, tuple[str, int, dict, int | None]] = {}
    kinds = [k for k in link.kinds if k in feed.KINDS] or [feed.KIND_SERVER]
    for kind in kinds:
        for i in range(0, len(keys), FETCH_KEYS):
            reply = ingest.request(link, "fetch", kind=kind, keys=keys[i:i + FETCH_KEYS])
            for key, raw in (reply.get("entities") or {}).items():
                if raw is not None:
                    entity = feed.open_entity(kind, key, raw, f"fetch {kind} {key}")
                    found[key] = (kind, int(reply["seq"]), entity, feed.hash_bytes(raw))
    changes = []
    for key in keys:
        if key in found:
            kind, seq, entity, entity_hash = found[key]
            changes.append(ingest.change_of(link.name, seq, kind, key, entity, entity_hash))
        else:
            changes.append(Change(known.get(key, kinds[0]), key, link.name, None))
    ingest.commit()
    return ingest.writer.apply(changes)


def verify_cell(ingest, link, repair: bool = False) -> dict:
    """Run the check for one feed (its driver greenlet calls this while live).
    Returns {"differing": [keys], "repaired": int, "buckets_differing": int, "seq": S}."""
    link.paused = True
    try:
        ingest.commit()
        digest = _consistent_digest(ingest, link)
        seq = int(digest["seq"])
        buckets = differing_buckets(digest["buckets"], ingest.writer.digests(link.name))
        differing: list[str] = []
        unsure: list[str] = []
        known: dict[str, str] = {}
        listed_at = seq
        for bucket in buckets:
            reply = ingest.request(link, "bucket", bucket=bucket)
            ours = ingest.writer.bucket_entities(link.name, bucket)
            known.update({key: value[0] for key, value in ours.items()})
            changed, replica_only = differing_keys(reply.get("entities") or {}, ours, seq)
            differing += changed
            if int(reply["seq"]) > seq:
                unsure += replica_only   # maybe removed between seq and this listing
                listed_at = max(listed_at, int(reply["seq"]))
            else:
                differing += replica_only
        if unsure:
            # Replay up to the latest listing: the tombstones of keys removed since S
            # arrive; what is still here was never in the cell.
            _reach(ingest, link, listed_at)
            differing += sorted(ingest.writer.existing(link.name, unsure))
        differing.sort()
        repaired = _repair(ingest, link, differing, known) if (repair and differing) else 0
    finally:
        link.paused = False
    log.info("cell %s: verify at %d: %d buckets, %d keys differ, %d repaired", link.name,
             seq, len(buckets), len(differing), repaired)
    return {"differing": differing, "repaired": repaired, "buckets_differing": len(buckets),
            "seq": seq}
