"""Rows rendered where the change happens: the publisher renders the replica row of
each upsert it sends (``replica.render``, the appliance's own render) and sends the row
with the entity (``replica.feed``: pre-rendered rows, ``rv`` the render's version), so
that an appliance of the same render version stores it without decoding and rendering
the entity, and N appliances do not render the same change N times. An appliance of
another render version renders the entity itself, as it does for replay and snapshots.
"""

from __future__ import annotations

import logging

from replica import feed, render
from replica.kinds import renderers

log = logging.getLogger("replica.cell.prerender")

RENDER_VERSION = render.RENDER_VERSION
_ROW_OF = {name: row for name, (_columns, row) in renderers(render).items()}


def with_rows(cell: str, events: list[feed.Event]) -> list[feed.Event]:
    """``events`` with a row in the last upsert of each key (ingest stores only the last
    change of a key in a batch; an earlier event goes without one). The row is rendered
    from the entity as the appliance gets it (decoded from its wire bytes), with that
    event's seq and the hash of those bytes. An entity the feed or the render refuses
    goes without a row: the appliance refuses it itself, with a dead letter."""
    last = {(e.kind, e.key): i for i, e in enumerate(events)}
    out = list(events)
    for i in last.values():
        e = events[i]
        if e.op != feed.OP_UPSERT or e.kind not in _ROW_OF:
            continue
        raw = feed.wire_entity(e.entity)
        digest = feed.hash_bytes(raw)
        try:
            entity = feed.open_entity(e.kind, e.key, raw, f"{cell} seq {e.seq}")
            row = _ROW_OF[e.kind](cell, e.seq, entity, digest)
        except Exception as exc:  # noqa: BLE001 - whatever refuses it, the appliance says
            log.warning("no row for %s %s (seq %d): %s", e.kind, e.key, e.seq, exc)
            continue
        out[i] = feed.Event(e.seq, e.kind, e.op, e.key, raw, digest, row)
    return out


def row_bytes(row) -> int:
    """About how many bytes ``row`` takes in a message."""
    if row is None:
        return 0
    return sum(len(v) if type(v) is str else 9 for v in row) + 3 * len(row)
