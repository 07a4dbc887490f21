"""Flavors: Nova's API database flavors, published by the flavor source."""

from replica.feed import FEED_KINDS, KIND_FLAVOR
from replica.kinds.declaration import Kind

FLAVOR = Kind(
    feed=FEED_KINDS[KIND_FLAVOR], table="flavors", key_column="flavorid",
    owner_column="source", render_columns="FLAVOR_COLUMNS", render_row="flavor_row",
    count_label="flavors", count_help="Flavors of the feed in the replica.",
    feed_role="flavors")
