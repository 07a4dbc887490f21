"""Host aggregates: Nova's API database ``aggregates``, ``aggregate_hosts`` and
``aggregate_metadata`` (GET /os-aggregates, and the zones of compute services: in
GET /os-services and GET /os-availability-zone), published by the API database's feed."""

from replica.feed import FEED_KINDS, KIND_AGGREGATE
from replica.kinds.declaration import Kind

AGGREGATE = Kind(
    feed=FEED_KINDS[KIND_AGGREGATE], table="aggregates", key_column="aggregate_key",
    owner_column="source", render_columns="AGGREGATE_COLUMNS", render_row="aggregate_row",
    count_label="aggregates", count_help="Host aggregates of the feed in the replica.",
    feed_role="flavors", reads=("aggregates", "availability zones"))
