"""One declaration per kind of entity the replica holds (``Kind``) and their registry
(``KINDS``).

A kind's declaration says everything the appliance side does with it: its feed part
(``replica.feed.FeedKind``: the name on the wire, fields, key), the replica table that
holds its rows (key column, owner column: the feed that owns the row), the render that
makes a row of an entity (``replica.render``'s column tuple and row function, named
so that ingest can be given another renderer), the columns an upsert usually leaves
as they are, the label of its row count in ingest's status and the metrics, and which
feeds publish it. Ingest, resync, verify, the writer, the status counts and the
metrics go over ``KINDS``; the cell side's builders are declared per kind in
``replica.cell.entity.SOURCE_KINDS``.

Adding a kind: its ``FeedKind`` in ``replica.feed``, its declaration here, its render
in ``replica.render``, its table (a schema step), its builder on the cell side, and
its reads and routes.
"""

from __future__ import annotations

from replica.kinds.aggregate import AGGREGATE
from replica.kinds.declaration import FEED_ROLES, Kind
from replica.kinds.flavor import FLAVOR
from replica.kinds.hypervisor import HYPERVISOR
from replica.kinds.instance_action import INSTANCE_ACTION
from replica.kinds.keypair import KEYPAIR
from replica.kinds.quota import QUOTA
from replica.kinds.server import SERVER
from replica.kinds.server_group import SERVER_GROUP
from replica.kinds.service import SERVICE

# In the order they were added: a new kind goes last (``Writer`` takes the kinds' row
# columns positionally in this order).
KINDS: dict[str, Kind] = {kind.name: kind for kind in (SERVER, FLAVOR, INSTANCE_ACTION,
                                                        KEYPAIR, QUOTA, HYPERVISOR, SERVICE,
                                                        AGGREGATE, SERVER_GROUP)}


def kind_named(name: str) -> Kind:
    """The declaration of the kind ``name`` (KeyError for a kind this build lacks)."""
    return KINDS[name]


def kinds_of_role(role: str) -> tuple[Kind, ...]:
    """The kinds that feeds of ``role`` (a cell's ``"servers"``, the API database's
    ``"flavors"``) publish."""
    return tuple(kind for kind in KINDS.values() if kind.feed_role == role)


def count_labels() -> dict[str, str]:
    """{kind name: its count label} (ingest status keys, metrics)."""
    return {kind.name: kind.count_label for kind in KINDS.values()}


def reads_as() -> str:
    """What the API answers from the replica, in words: "a, b and c" over ``KINDS``."""
    # (two kinds may make one read: availability zones are services and aggregates)
    names = list(dict.fromkeys(name for kind in KINDS.values() for name in kind.reads_as))
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def renderers(renderer) -> dict[str, tuple[tuple[str, ...], object]]:
    """{kind name: (row columns, row function)} of ``renderer`` (``replica.render`` or a
    stand-in with the same names); a kind the stand-in does not render is rendered by
    ``replica.render``."""
    from replica import render  # imported here, statically: the frozen binary sees it
    out = {}
    for kind in KINDS.values():
        source = renderer if hasattr(renderer, kind.render_row) else render
        out[kind.name] = (tuple(getattr(source, kind.render_columns)),
                          getattr(source, kind.render_row))
    return out


__all__ = ["FEED_ROLES", "KINDS", "Kind", "count_labels", "kind_named", "kinds_of_role",
           "reads_as", "renderers"]
