"""The ``Kind`` declaration (see ``replica.kinds``)."""

from __future__ import annotations

from dataclasses import dataclass

from replica.feed import FeedKind

# The two roles of a feed (the settings' cell ``kind``): a cell's feed publishes the
# kinds of the cell database, the flavor source the kinds of Nova's API database.
FEED_ROLES = ("servers", "flavors")


@dataclass(frozen=True, slots=True)
class Kind:
    """How one kind of entity travels, is rendered, stored, counted and labelled."""

    feed: FeedKind
    table: str                  # the replica table of its rows
    key_column: str             # ... its primary key (the feed key)
    owner_column: str           # ... the column naming the feed that owns a row
    render_columns: str         # the renderer's tuple of the table's columns, by name
    render_row: str             # the renderer's function (feed, seq, entity, hash) -> row
    count_label: str            # its row count in ingest's status and the metrics
    count_help: str             # the metric's help text
    feed_role: str              # which feeds publish it (one of FEED_ROLES)
    # Indexed columns an entity's new version almost never changes: an upsert leaves
    # them out of its SET (see replica.store.writer.Table).
    stable: tuple[str, ...] = ()
    # What the API answers from it, for people (the "not replicated" fault lists them);
    # empty: its count label, words apart
    reads: tuple[str, ...] = ()

    @property
    def reads_as(self) -> tuple[str, ...]:
        """What the API answers from this kind, in words (e.g. ("instance actions",))."""
        return self.reads or (self.count_label.replace("_", " "),)

    @property
    def name(self) -> str:
        """The kind's name on the wire (an event's ``k``)."""
        return self.feed.name

    @property
    def metric_name(self) -> str:
        return f"appliance_cell_{self.count_label}"

    def __post_init__(self):
        if self.feed_role not in FEED_ROLES:
            raise ValueError(f"kind {self.feed.name}: feed role {self.feed_role!r} is not one "
                             f"of {FEED_ROLES}")
