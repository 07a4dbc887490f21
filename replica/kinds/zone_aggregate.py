"""Aggregates as availability zones need them (Nova's API database ``aggregates``,
their ``availability_zone`` metadata and their hosts), published by the API database's
feed."""

from replica.feed import FEED_KINDS, KIND_ZONE_AGGREGATE
from replica.kinds.declaration import Kind

ZONE_AGGREGATE = Kind(
    feed=FEED_KINDS[KIND_ZONE_AGGREGATE], table="zone_aggregates",
    key_column="aggregate_key", owner_column="source", render_columns="ZONE_AGGREGATE_COLUMNS",
    render_row="zone_aggregate_row", count_label="zone_aggregates",
    count_help="Aggregates of the feed in the replica (for availability zones).",
    feed_role="flavors", reads=("availability zones",))
